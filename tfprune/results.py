"""Sweep results on disk: one JSON file per finished point (written atomically), merged into tables.

Layout of an output dir::

    points/<method>-k<k>.json   one record per finished (method, k) point; the unit of resume and of sharding
    results.csv / .json / .md   the merged table, rewritten after every point (atomically)

A killed sweep loses at most the point in flight; ``--resume`` skips points whose file exists. Shards write
disjoint point files (into one shared dir or several); ``merge`` combines any number of dirs.
"""

import csv
import glob
import io
import json
import os

from tfprune import io_utils

POINTS = "points"
METHOD_ORDER = ("weight", "unit", "tfmot")
METHOD_LABELS = {"weight": "Weight pruning", "unit": "Unit pruning", "tfmot": "TF-MOT magnitude"}
FIRST_COLUMNS = ("method", "k", "target_sparsity", "achieved_sparsity", "test_accuracy", "test_loss",
                 "remaining_weights", "total_weights", "dense_size_bytes", "gzip_size_bytes")


def point_key(method, k):
    """File stem of a point: ``weight-k90``, ``unit-k97.5``."""
    return f"{method}-k{k:g}"


class ResultStore:
    """Reads and writes the point records of one output dir."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.points_dir = os.path.join(output_dir, POINTS)

    def path(self, method, k):
        return os.path.join(self.points_dir, point_key(method, k) + ".json")

    def has(self, method, k):
        return os.path.isfile(self.path(method, k))

    def write_point(self, record):
        """Writes one finished point atomically (temp file, fsync, rename)."""
        io_utils.write_json_atomic(self.path(record["method"], record["k"]), record)

    def records(self):
        return load_points([self.output_dir])


def load_points(output_dirs):
    """All point records found in ``output_dirs`` (later dirs win on the same key), sorted by method then k.

    Raises:
      ValueError: naming the file, when a point file is not valid JSON (never skipped silently).
    """
    merged = {}
    for folder in output_dirs:
        for path in sorted(glob.glob(os.path.join(folder, POINTS, "*.json"))):
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: unreadable point record ({e})") from None
            merged[point_key(record["method"], record["k"])] = record
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(merged.values(), key=lambda r: (order.get(r["method"], len(order)), r["method"], r["k"]))


def flatten(record):
    """A record as one flat CSV row: dict-valued fields become ``<field>.<key>`` columns."""
    row = {}
    for key, value in record.items():
        if isinstance(value, dict):
            row.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        elif isinstance(value, list):
            continue
        else:
            row[key] = value
    return row


def to_csv(records):
    rows = [flatten(r) for r in records]
    columns = [c for c in FIRST_COLUMNS if any(c in r for r in rows)]
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _pct(value):
    return "" if value is None else f"{100 * value:.2f}"


def accuracy_table(records, baseline_accuracy=None):
    """The classic experiment's table: one row per k %, one accuracy-% column per method."""
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in records)]
    methods += sorted({r["method"] for r in records} - set(methods))
    by_key = {(r["method"], r["k"]): r for r in records}
    ks = sorted({r["k"] for r in records})
    lines = ["| k % | " + " | ".join(f"{METHOD_LABELS.get(m, m)} accuracy %" for m in methods) + " |",
             "|---:|" + "---:|" * len(methods)]
    for k in ks:
        cells = [_pct(by_key[(m, k)]["test_accuracy"]) if (m, k) in by_key else "–" for m in methods]
        lines.append(f"| {k:g} | " + " | ".join(cells) + " |")
    if baseline_accuracy is not None:
        lines.append(f"\nDense baseline: {100 * baseline_accuracy:.2f} % test accuracy.")
    return "\n".join(lines)


def _kib(value):
    return f"{value / 1024:,.0f}"


def _extra_columns(records):
    """(key, header, format) of the optional per-point figures present in ``records``, in a fixed order."""
    columns = [("finetune_seconds_per_epoch", "fine-tune s/epoch", "{:.1f}".format),
               ("time_ratio_to_dense", "time / dense", "{:.2f}x".format),
               ("shrunk_params", "shrunk params", "{:,}".format)]
    variants = sorted({key[len("tflite_"):-len("_size_bytes")] for r in records for key in r
                       if key.startswith("tflite_") and key.endswith("_size_bytes")
                       and not key.endswith("_gzip_size_bytes")})
    for variant in variants:
        name = variant.replace("_sparse", "+sparse").replace("shrunk_", "shrunk ")
        columns += [(f"tflite_{variant}_size_bytes", f"TFLite {name} KiB", _kib),
                    (f"tflite_{variant}_accuracy", f"TFLite {name} accuracy %", _pct),
                    (f"tflite_{variant}_latency_ms", f"TFLite {name} ms", "{:.3f}".format)]
    return [c for c in columns if any(r.get(c[0]) is not None for r in records)]


def details_table(records):
    """Per point: achieved sparsity, loss, remaining weights, sizes, and the fine-tune, shrink and TFLite figures
    (every exported variant) when present."""
    extra = _extra_columns(records)
    head = ["method", "k %", "achieved sparsity %", "accuracy %", "loss", "remaining weights", "gzip size KiB"]
    head += [header for _, header, _ in extra]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in records:
        cells = [r["method"], f"{r['k']:g}", _pct(r.get("achieved_sparsity")), _pct(r.get("test_accuracy")),
                 f"{r.get('test_loss', float('nan')):.4f}", f"{r.get('remaining_weights', 0):,}",
                 _kib(r.get("gzip_size_bytes", 0))]
        cells += ["" if r.get(key) is None else fmt(r[key]) for key, _, fmt in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(records, output_dir, title, command=None, baseline_accuracy=None, prefix="results", summary=None):
    """Writes ``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.md`` atomically; returns the Markdown text.

    ``summary``: optional Markdown placed between the accuracy table and the details.
    """
    parts = [f"# {title}", ""]
    if command:
        parts += ["Produced by:", "", "```sh", command, "```", ""]
    parts += [accuracy_table(records, baseline_accuracy), ""]
    if summary:
        parts += [summary, ""]
    parts += ["## Details", "", details_table(records), ""]
    markdown = "\n".join(parts)
    io_utils.write_text_atomic(os.path.join(output_dir, prefix + ".csv"), to_csv(records))
    io_utils.write_json_atomic(os.path.join(output_dir, prefix + ".json"),
                               {"title": title, "command": command, "baseline_accuracy": baseline_accuracy,
                                "points": records})
    io_utils.write_text_atomic(os.path.join(output_dir, prefix + ".md"), markdown)
    return markdown
