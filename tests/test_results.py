"""tfprune.results: point files, CSV flattening and the Markdown tables a person reads."""

from tfprune import results


def _record(method, k, **extra):
    return {"method": method, "k": k, "target_sparsity": k / 100, "achieved_sparsity": k / 100,
            "test_accuracy": 0.9 - k / 1000, "test_loss": 0.3, "remaining_weights": 1000, "gzip_size_bytes": 4096,
            "layer_sparsity": {"fc1": k / 100}, "histograms": {"fc1": {"zeros": 1, "counts": [1, 2]}}, **extra}


def test_accuracy_table_has_one_column_per_method_and_dashes_for_missing_points():
    table = results.accuracy_table([_record("weight", 0.0), _record("weight", 90.0), _record("unit", 0.0)], 0.9)
    lines = table.splitlines()
    assert lines[0] == "| k % | Weight pruning accuracy % | Unit pruning accuracy % |"
    assert lines[2] == "| 0 | 90.00 | 90.00 |" and lines[3] == "| 90 | 81.00 | – |"
    assert "Dense baseline: 90.00 % test accuracy." in table


def test_details_table_names_and_formats_every_exported_variant():
    records = [_record("weight", 90.0, tflite_float_size_bytes=10240, tflite_float_gzip_size_bytes=2048,
                       tflite_float_accuracy=0.8765, tflite_float_latency_ms=0.12345,
                       tflite_int8_sparse_size_bytes=3072, tflite_int8_sparse_accuracy=0.87,
                       tflite_int8_sparse_latency_ms=0.5),
               _record("unit", 90.0, shrunk_params=94600, tflite_shrunk_float_size_bytes=1024,
                       tflite_shrunk_float_accuracy=0.5, tflite_shrunk_float_latency_ms=0.01)]
    head, _, weight, unit = results.details_table(records).splitlines()
    assert "| shrunk params | TFLite float KiB | TFLite float accuracy % | TFLite float ms |" in head
    assert "TFLite int8+sparse KiB" in head and "TFLite shrunk float ms" in head and "gzip_size" not in head
    assert "| 10 | 87.65 | 0.123 |" in weight and "| 3 | 87.00 | 0.500 |" in weight
    cells = [c.strip() for c in unit.split("|")[1:-1]]
    assert "94,600" in cells and cells.count("") == 6  # the unit row has none of the weight point's TFLite figures


def test_flatten_drops_nested_lists_and_keeps_layer_columns():
    row = results.flatten(_record("weight", 50.0))
    assert row["layer_sparsity.fc1"] == 0.5 and not any(k.startswith("histograms") for k in row)
