"""Typed point records (JSON round trip, format 1, strict reading), CSV rows and the Markdown tables a person reads."""

import dataclasses
import json
import os
import re

import pytest

from tfprune.experiments.results import records
from tfprune.experiments.results import store
from tfprune.experiments.results import tables
from tfprune.experiments.results.records import PointRecord, RecordError, ShrinkFigures, VariantFigures


def _record(method, k, **extra):
    return PointRecord(method=method, k=k, target_sparsity=k / 100, achieved_sparsity=k / 100,
                       layer_sparsity={"fc1": k / 100}, units_kept={"fc1": 100}, test_accuracy=0.9 - k / 1000,
                       test_loss=0.3, remaining_weights=1000, total_weights=2000, dense_size_bytes=8192,
                       gzip_size_bytes=4096, finetune_epochs=0, schedule="oneshot", distribution_strategy="off",
                       replicas=1, point_seconds=1.5, histograms={"fc1": {"zeros": 1, "counts": [1, 2]}}, **extra)


def _variant(variant, model=records.PRUNED, **figures):
    values = dict(size_bytes=10240, gzip_size_bytes=2048, accuracy=0.8765, loss=0.4, latency_ms=0.12345,
                  latency_p90_ms=0.2, path="xnnpack", fallback_reason="", sparsity=0.9, convert_seconds=0.5)
    values.update(figures)
    return VariantFigures(variant=variant, model=model, **values)


def test_accuracy_table_has_one_column_per_method_and_dashes_for_missing_points():
    table = tables.accuracy_table([_record("weight", 0.0), _record("weight", 90.0), _record("unit", 0.0)], 0.9)
    lines = table.splitlines()
    assert lines[0] == "| k % | Weight pruning accuracy % | Unit pruning accuracy % |"
    assert lines[2] == "| 0 | 90.00 | 90.00 |" and lines[3] == "| 90 | 81.00 | – |"
    assert "Dense baseline: 90.00 % test accuracy." in table


def test_details_table_names_and_formats_every_exported_variant():
    weight = _record("weight", 90.0, exports=(
        _variant("float"), _variant("int8+sparse", size_bytes=3072, accuracy=0.87, latency_ms=0.5)))
    unit = _record("unit", 90.0, shrink=ShrinkFigures(266610, 94600, 266200, 94400, 1, 0.0),
                   exports=(_variant("float", records.SHRUNK, size_bytes=1024, accuracy=0.5, latency_ms=0.01),))
    head, _, weight_row, unit_row = tables.details_table([weight, unit]).splitlines()
    assert "| shrunk params | TFLite float KiB | TFLite float accuracy % | TFLite float ms |" in head
    assert "TFLite int8+sparse KiB" in head and "TFLite shrunk float ms" in head and "gzip_size" not in head
    assert "| 10 | 87.65 | 0.123 |" in weight_row and "| 3 | 87.00 | 0.500 |" in weight_row
    cells = [c.strip() for c in unit_row.split("|")[1:-1]]
    assert "94,600" in cells and cells.count("") == 6  # the unit row has none of the weight point's TFLite figures


def test_row_flattens_dicts_leaves_out_histograms_and_names_exports_as_format_1():
    row = _record("weight", 50.0, shrink=ShrinkFigures(10, 5, 100, 50, 2, 1e-7),
                  exports=(_variant("int8+sparse"), _variant("float", records.SHRUNK))).to_row()
    assert row["layer_sparsity.fc1"] == 0.5 and not any(k.startswith("histograms") for k in row)
    assert row["tflite_int8_sparse_size_bytes"] == 10240 and row["tflite_shrunk_float_latency_ms"] == 0.12345
    assert (row["shrunk_params"], row["shrunk_kept_notes"], row["shrunk_max_abs_diff"]) == (5, 2, 1e-7)
    assert list(row) == sorted(row)
    csv_head = tables.to_csv([_record("weight", 0.0)]).splitlines()[0].split(",")
    assert csv_head[:len(tables.FIRST_COLUMNS)] == list(tables.FIRST_COLUMNS)


def test_json_round_trip_is_exact():
    record = _record("unit", 97.5, finetune_seconds_per_epoch=3.25, time_ratio_to_dense=1.1,
                     shrink=ShrinkFigures(10, 5, 100, 50, 2, 1e-7),
                     exports=(_variant("float"), _variant("float", records.SHRUNK)))
    text = json.dumps(record.to_json())
    assert PointRecord.from_json(json.loads(text)) == record
    assert json.loads(text)["format_version"] == records.FORMAT_VERSION
    assert record.key == "unit-k97.5" and record.export("float", records.SHRUNK).model == "shrunk"


def test_format_1_flat_records_still_load(tmp_path):
    new = _record("unit", 90.0, shrink=ShrinkFigures(10, 5, 100, 50, 2, 0.0),
                  exports=(_variant("int8+sparse"), _variant("float", records.SHRUNK)))
    flat = {k: v for k, v in new.to_row().items() if "." not in k}  # format 1: one flat dict
    flat.update(layer_sparsity=new.layer_sparsity, units_kept=new.units_kept, histograms=new.histograms)
    os.makedirs(tmp_path / "points")
    (tmp_path / "points" / "unit-k90.json").write_text(json.dumps(flat))
    (loaded,) = store.load_points([str(tmp_path)])
    assert loaded == new


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("test_accuracy"), "field 'test_accuracy' is missing"),
    (lambda d: d.update(accuracy_pct=90), "unknown field(s) accuracy_pct"),
    (lambda d: d.update(test_accuracy="high"), "field 'test_accuracy' is 'high'"),
    (lambda d: d.update(replicas=True), "field 'replicas' is True"),
    (lambda d: d.update(format_version=7), "point record format 7"),
    (lambda d: d["exports"][0].pop("latency_ms"), "exports[0]: field 'latency_ms' is missing"),
])
def test_a_bad_record_is_an_error_naming_the_file_and_field(tmp_path, change, message):
    obj = _record("weight", 90.0, exports=(_variant("float"),)).to_json()
    change(obj)
    path = tmp_path / "points" / "weight-k90.json"
    os.makedirs(path.parent)
    path.write_text(json.dumps(obj))
    with pytest.raises(RecordError, match=re.escape(str(path)) + ": .*" + re.escape(message)):
        store.load_points([str(tmp_path)])


def test_empty_and_truncated_point_files_are_errors(tmp_path):
    os.makedirs(tmp_path / "points")
    (tmp_path / "points" / "weight-k0.json").write_text("{}")
    with pytest.raises(RecordError, match="weight-k0.json: field 'method' is missing"):
        store.load_points([str(tmp_path)])
    (tmp_path / "points" / "weight-k0.json").write_text('{"method": "wei')
    with pytest.raises(RecordError, match="weight-k0.json: unreadable point record"):
        store.load_points([str(tmp_path)])


def test_store_writes_atomically_and_sorts_by_method_then_k(tmp_path):
    st = store.ResultStore(str(tmp_path))
    for record in (_record("unit", 50.0), _record("weight", 90.0), _record("weight", 0.0)):
        st.write_point(record)
    assert st.has("weight", 90.0) and not st.has("weight", 50.0)
    assert [r.key for r in st.records()] == ["weight-k0", "weight-k90", "unit-k50"]
    replaced = dataclasses.replace(_record("weight", 90.0), test_accuracy=0.5)
    st.write_point(replaced)
    assert st.records()[1] == replaced
