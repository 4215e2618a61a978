"""tfprune vs TF-MOT as a library: the same sweep with TF-MOT's method beside tfprune's, and a head-to-head table.

Every method starts from the same trained baseline and fine-tunes on the identical data, TF-MOT schedule, step
count, batch size and optimizer. Besides the sweep's per-point figures a comparison fine-tunes the unpruned model
the same way (the dense reference), so every point gets its fine-tune time per epoch as a ratio to dense
training, and it writes ``compare.{csv,json,md}`` (with the head-to-head table) and ``compare_*.png``.
"""

from tfprune.experiments.results import records
from tfprune.experiments import sweep
from tfprune.experiments import config as config_lib
from tfprune.experiments.config import FineTune, SweepConfig

METHODS = ("weight", "unit", "tfmot")
FINETUNE_EPOCHS = 2
ACCURACY_MARGIN = 0.2  # percentage points: "at least as accurate as TF-MOT" allows this much noise


# (tfprune method, its TF-MOT counterpart, table title): same kernels, same blocks
PAIRS = (("weight", "tfmot", "tfprune weight pruning vs TF-MOT"),
         ("block_1x4", "tfmot_block_1x4", "tfprune 1x4 block pruning vs TF-MOT block_size (4, 1)"),
         ("block_1x16", "tfmot_block_1x16", "tfprune 1x16 block pruning vs TF-MOT block_size (16, 1)"),
         ("nm_2x4", "tfmot_nm_2x4", "tfprune 2:4 (nm_2x4) vs TF-MOT sparsity_m_by_n=(2, 4)"))


def _nm_pairs(methods):
    """The pairs of the N:M patterns ``PAIRS`` does not name: ``nm_<n>x<m>`` vs ``tfmot_nm_<n>x<m>``."""
    named = {theirs for _, theirs, _ in PAIRS}
    out = []
    for theirs in sorted(set(methods) - named):
        ours = config_lib.tfmot_nm_method(theirs)
        if ours is not None:
            n, m = ours[3:].split("x")
            out.append((ours, theirs, f"tfprune {n}:{m} ({ours}) vs TF-MOT sparsity_m_by_n=({int(m) - int(n)}, {m})"))
    return tuple(out)


def _pair_table(by_key, ours_method, theirs_method, title):
    ks = sorted({k for m, k in by_key if m == theirs_method and (ours_method, k) in by_key})
    if not ks:
        return None
    lines = [f"## {title} (same schedule and steps)", "",
             "| k % | tfprune accuracy % | TF-MOT accuracy % | difference (points) | tfprune s/epoch | "
             "TF-MOT s/epoch | TF-MOT time / tfprune time | max per-layer sparsity difference (points) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst, speedups = float("inf"), []
    for k in ks:
        ours, theirs = by_key[(ours_method, k)], by_key[(theirs_method, k)]
        diff = 100 * (ours.test_accuracy - theirs.test_accuracy)
        worst = min(worst, diff)
        ours_s, theirs_s = ours.finetune_seconds_per_epoch or 0.0, theirs.finetune_seconds_per_epoch or 0.0
        speed = theirs_s / max(ours_s, 1e-9)
        speedups.append(speed)
        layer_diff = max((abs(ours.layer_sparsity[n] - theirs.layer_sparsity.get(n, 0.0))
                          for n in ours.layer_sparsity), default=0.0)
        lines.append(f"| {records.format_k(k)} | {100 * ours.test_accuracy:.2f} | {100 * theirs.test_accuracy:.2f} | "
                     f"{diff:+.2f} | {ours_s:.1f} | {theirs_s:.1f} | {speed:.2f}x | {100 * layer_diff:.4f} |")
    verdict = "yes" if worst >= -ACCURACY_MARGIN else "no"
    lines += ["", f"tfprune {ours_method} at least as accurate as TF-MOT (within {ACCURACY_MARGIN} points) at "
              f"every k: **{verdict}** (worst difference {worst:+.2f} points).",
              f"Fine-tune epochs: TF-MOT takes {min(speedups):.2f}x to {max(speedups):.2f}x the time of tfprune "
              f"(median {sorted(speedups)[len(speedups) // 2]:.2f}x)."]
    return lines + _qat_lines(by_key, ours_method, theirs_method, ks)


def _qat_lines(by_key, ours_method, theirs_method, ks):
    """The pair's int8 files after QAT (``--qat_epochs``; TF-MOT's side is TF-MOT's PQAT) per k, when both have
    them: LiteRT accuracy on the export's test images, and the post-training int8 beside them."""
    rows = []
    for k in ks:
        ours, theirs = by_key[(ours_method, k)], by_key[(theirs_method, k)]
        for variant in sorted({e.variant for e in ours.exports if e.model == records.QAT}):
            mine, other = ours.export(variant, records.QAT), theirs.export(variant, records.QAT)
            if other is None:
                continue
            ptq = [p.export(variant) for p in (ours, theirs)]
            cells = [f"{100 * p.accuracy:.2f}" if p else "" for p in ptq]
            rows.append(f"| {records.format_k(k)} | {variant} | {100 * mine.accuracy:.2f} | {100 * other.accuracy:.2f} "
                        f"| {100 * (mine.accuracy - other.accuracy):+.2f} | {cells[0]} | {cells[1]} |")
    if not rows:
        return []
    return ["", "| k % | QAT variant | tfprune QAT accuracy % | TF-MOT PQAT accuracy % | difference (points) | "
            "tfprune post-training accuracy % | TF-MOT post-training accuracy % |",
            "|---:|---|---:|---:|---:|---:|---:|", *rows]


def head_to_head(points, baseline_info):
    """Markdown: per k, each tfprune method vs its TF-MOT counterpart (``PAIRS``: weight vs tfmot, block_1x4 vs
    tfmot_block_1x4, nm_2x4 vs tfmot_nm_2x4...; any nm_<n>x<m> vs tfmot_nm_<n>x<m>): accuracy, fine-tune speed and
    per-layer sparsity agreement (None when the points hold no k with both of any pair)."""
    by_key = {(r.method, r.k): r for r in points}
    pairs = PAIRS + _nm_pairs({r.method for r in points})
    tables = [t for t in (_pair_table(by_key, *pair) for pair in pairs) if t is not None]
    if not tables:
        return None
    lines = [line for table in tables for line in table + [""]][:-1]
    if "dense_seconds_per_epoch" in baseline_info:
        if lines[-1].startswith("|"):  # a table ends at a blank line
            lines.append("")
        lines.append(f"Dense fine-tuning (no pruning, same recipe): {baseline_info['dense_seconds_per_epoch']:.1f} "
                     f"s/epoch, test accuracy {100 * baseline_info['dense_finetune_accuracy']:.2f} %.")
    return "\n".join(lines)


COMPARE = sweep.Mode(prefix="compare", plot_prefix="compare_", title="tfprune vs TF-MOT", dense_reference=True,
                     summary=head_to_head)


def compare_config(output_dir, finetune=None, **kwargs):
    """A ``SweepConfig`` with the comparison's defaults: methods weight, unit and tfmot, ``FINETUNE_EPOCHS``
    fine-tune epochs on TF-MOT's PolynomialDecay (any field can still be given)."""
    finetune = finetune or FineTune(epochs=FINETUNE_EPOCHS, schedule="polynomial")
    return SweepConfig(output_dir, finetune=finetune, **dict({"methods": METHODS}, **kwargs))


def run_compare(config, strategy=None, command=None, report=print):
    """``sweep.run_sweep`` in comparison mode (see the module docstring) on ``config`` (e.g. from
    ``compare_config``); returns its ``SweepResult``. Without the tfmot method the head-to-head table is left out.

    Raises:
      ConfigError, DatasetError: as ``run_sweep``.
    """
    return sweep.run_sweep(config, COMPARE, strategy, command, report)


__all__ = ["ACCURACY_MARGIN", "COMPARE", "FINETUNE_EPOCHS", "METHODS", "PAIRS", "compare_config",
           "head_to_head", "run_compare"]
