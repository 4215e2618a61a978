"""The tables a person reads: a sweep's points as CSV, JSON and Markdown (accuracy per k and method, details)."""

import csv
import io
import os

from tfprune.files import io_utils
from tfprune.experiments.results import records
from tfprune.experiments.results import store

METHOD_LABELS = {"weight": "Weight pruning", "unit": "Unit pruning", "group": "Group pruning",
                 "group_mean": "Group pruning (mean)", "group_max": "Group pruning (max)", "tfmot": "TF-MOT magnitude",
                 "block_1x4": "Block pruning 1x4", "block_1x16": "Block pruning 1x16", "nm_2x4": "N:M 2:4",
                 "nm_1x4": "N:M 1:4",
                 "tfmot_block_1x4": "TF-MOT blocks 1x4", "tfmot_block_1x16": "TF-MOT blocks 1x16",
                 "tfmot_nm_2x4": "TF-MOT m_by_n 2:4"}
FIRST_COLUMNS = ("method", "k", "target_sparsity", "achieved_sparsity", "test_accuracy", "test_loss",
                 "remaining_weights", "total_weights", "dense_size_bytes", "gzip_size_bytes")


def methods_in(points):
    """The methods present in ``points``, in table order (weight, unit, tfmot, then others by name)."""
    present = {r.method for r in points}
    return [m for m in store.METHOD_ORDER if m in present] + sorted(present - set(store.METHOD_ORDER))


def to_csv(points):
    """The points as CSV: the main figures first, then every other column in name order."""
    rows = [r.to_row() for r in points]
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


def accuracy_table(points, baseline_accuracy=None):
    """The classic experiment's table: one row per k %, one accuracy-% column per method."""
    methods = methods_in(points)
    by_key = {(r.method, r.k): r for r in points}
    ks = sorted({r.k for r in points})
    lines = ["| k % | " + " | ".join(f"{METHOD_LABELS.get(m, m)} accuracy %" for m in methods) + " |",
             "|---:|" + "---:|" * len(methods)]
    for k in ks:
        cells = [_pct(by_key[(m, k)].test_accuracy) if (m, k) in by_key else "–" for m in methods]
        lines.append(f"| {records.format_k(k)} | " + " | ".join(cells) + " |")
    if baseline_accuracy is not None:
        lines.append(f"\nDense baseline: {100 * baseline_accuracy:.2f} % test accuracy.")
    ran_on = {}
    for m in methods:
        for stack in sorted({r.keras for r in points if r.method == m and r.keras}):
            ran_on.setdefault(stack, []).append(METHOD_LABELS.get(m, m))
    if ran_on:
        lines.append("Keras: " + "; ".join(f"{', '.join(ms)} on {stack}" for stack, ms in ran_on.items()) + ".")
    return "\n".join(lines)


def _kib(value):
    return "" if value is None else f"{value / 1024:,.0f}"


def _apis(value):
    return "both" if value == "interpreter,compiled_model" else f"{value} only"


def _qat_time_ratio(r):
    if r.qat is None or not r.finetune_seconds_per_epoch:
        return None
    return r.qat.seconds_per_epoch / r.finetune_seconds_per_epoch


def _yes(flag):
    return "–" if flag is None else ("yes" if flag else "NO")


def _qat_zeros(qat):
    extra = f" (+{qat.int8_extra_zeros:,} rounded to 0)" if qat.int8_extra_zeros else ""
    return f"{_yes(qat.zeros_kept)}, {_yes(qat.int8_zeros_kept)}{extra}"


def _extra_columns(points):
    """(header, value of a point or None, format) of the optional per-point figures present, in a fixed order:
    fine-tune time, shrunk parameters, then size, accuracy and latency of every exported variant."""
    columns = [("fine-tune s/epoch", lambda r: r.finetune_seconds_per_epoch, "{:.1f}".format),
               ("time / dense", lambda r: r.time_ratio_to_dense, "{:.2f}x".format),
               ("shrunk params", lambda r: r.shrink and r.shrink.shrunk_params, "{:,}".format),
               ("QAT s/epoch", lambda r: r.qat and r.qat.seconds_per_epoch, "{:.1f}".format),
               ("QAT / fine-tune epoch", _qat_time_ratio, "{:.2f}x".format),
               ("QAT Keras accuracy %", lambda r: r.qat and r.qat.accuracy, _pct),
               ("QAT zeros kept (Keras, int8 file)", lambda r: r.qat and _qat_zeros(r.qat), str)]
    variants = {}
    for r in points:
        for e in r.exports:
            variants.setdefault(e.column, (e.variant, e.model, e.label))
    for _, (variant, model, label) in sorted(variants.items()):
        def figure(name, variant=variant, model=model):
            return lambda r: getattr(r.export(variant, model), name, None)
        columns += [(f"TFLite {label} KiB", figure("size_bytes"), _kib),
                    (f"TFLite {label} accuracy %", figure("accuracy"), _pct),
                    (f"TFLite {label} ms", figure("latency_ms"), "{:.3f}".format),
                    (f"TFLite {label} LiteRT APIs", figure("apis"), _apis)]
    return [c for c in columns if any(c[1](r) is not None for r in points)]


def details_table(points):
    """Per point: achieved sparsity, loss, remaining weights, sizes, and the fine-tune, shrink and TFLite figures
    (every exported variant) when present."""
    extra = _extra_columns(points)
    gzipped = any(r.gzip_size_bytes is not None for r in points)  # measured when the sweep asked (gzip_size)
    head = ["method", "k %", "achieved sparsity %", "accuracy %", "loss", "remaining weights"]
    head += ["gzip size KiB"] * gzipped + [header for header, _, _ in extra]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in points:
        cells = [r.method, records.format_k(r.k), _pct(r.achieved_sparsity), _pct(r.test_accuracy),
                 f"{r.test_loss:.4f}",
                 f"{r.remaining_weights:,}"] + [_kib(r.gzip_size_bytes)] * gzipped
        cells += ["" if get(r) is None else fmt(get(r)) for _, get, fmt in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(points, output_dir, title, command=None, baseline_accuracy=None, prefix="results", summary=None):
    """Writes ``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.md`` atomically; returns the Markdown text.

    ``summary``: optional Markdown placed between the accuracy table and the details.
    """
    parts = [f"# {title}", ""]
    if command:
        parts += ["Produced by:", "", "```sh", command, "```", ""]
    parts += [accuracy_table(points, baseline_accuracy), ""]
    if summary:
        parts += [summary, ""]
    parts += ["## Details", "", details_table(points), ""]
    markdown = "\n".join(parts)
    io_utils.write_text_atomic(os.path.join(output_dir, prefix + ".csv"), to_csv(points))
    io_utils.write_json_atomic(os.path.join(output_dir, prefix + ".json"),
                               {"title": title, "command": command, "baseline_accuracy": baseline_accuracy,
                                "points": [r.to_json() for r in points]})
    io_utils.write_text_atomic(os.path.join(output_dir, prefix + ".md"), markdown)
    return markdown


__all__ = ["FIRST_COLUMNS", "METHOD_LABELS", "accuracy_table", "details_table", "methods_in", "to_csv", "write_tables"]
