"""tfprune vs TF-MOT, side by side: same trained baseline, data, schedule, step count, batch and optimizer.

    python -m tfprune.compare --flagfile=flags/compare_fashion_mnist_fc1000.flags
    python -m tfprune.compare --dataset=mnist --data_dir=../shared/data/mnist --output_dir=runs/cmp

Takes every flag of ``tfprune.sweep`` (see --helpfull) with comparison defaults: methods weight, unit and tfmot,
2 fine-tune epochs on TF-MOT's PolynomialDecay. Besides the sweep's per-point figures it fine-tunes the unpruned
model the same way (the dense reference), so every point gets its fine-tune time per epoch as a ratio to dense
training, and writes compare.csv, compare.json, compare.md (with the head-to-head table) and
compare_accuracy_vs_k.png (three methods as three lines, the dense baseline as a horizontal line).
"""

from absl import flags

from tfprune import cli
from tfprune import sweep

FLAGS = flags.FLAGS
# Ordered: set_default validates at once, and --methods=tfmot is only valid once --finetune_epochs >= 1.
COMPARE_DEFAULTS = {"finetune_epochs": 2, "schedule": "polynomial", "methods": ["weight", "unit", "tfmot"]}
ACCURACY_MARGIN = 0.2  # percentage points: "at least as accurate as TF-MOT" allows this much noise


def head_to_head(records, baseline_info):
    """Markdown: per k, weight vs TF-MOT accuracy, fine-tune speed and per-layer sparsity agreement."""
    by_key = {(r["method"], r["k"]): r for r in records}
    ks = sorted({k for m, k in by_key if m == "tfmot" and ("weight", k) in by_key})
    if not ks:
        return None
    lines = ["## tfprune weight pruning vs TF-MOT (same schedule and steps)", "",
             "| k % | tfprune accuracy % | TF-MOT accuracy % | difference (points) | tfprune s/epoch | "
             "TF-MOT s/epoch | TF-MOT time / tfprune time | max per-layer sparsity difference (points) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst, speedups = float("inf"), []
    for k in ks:
        ours, theirs = by_key[("weight", k)], by_key[("tfmot", k)]
        diff = 100 * (ours["test_accuracy"] - theirs["test_accuracy"])
        worst = min(worst, diff)
        speed = theirs.get("finetune_seconds_per_epoch", 0) / max(ours.get("finetune_seconds_per_epoch", 0), 1e-9)
        speedups.append(speed)
        layer_diff = max((abs(ours["layer_sparsity"][n] - theirs["layer_sparsity"].get(n, 0.0))
                          for n in ours["layer_sparsity"]), default=0.0)
        lines.append(f"| {k:g} | {100 * ours['test_accuracy']:.2f} | {100 * theirs['test_accuracy']:.2f} | "
                     f"{diff:+.2f} | {ours.get('finetune_seconds_per_epoch', 0):.1f} | "
                     f"{theirs.get('finetune_seconds_per_epoch', 0):.1f} | {speed:.2f}x | {100 * layer_diff:.4f} |")
    verdict = "yes" if worst >= -ACCURACY_MARGIN else "no"
    lines += ["", f"tfprune weight pruning at least as accurate as TF-MOT (within {ACCURACY_MARGIN} points) at "
              f"every k: **{verdict}** (worst difference {worst:+.2f} points).",
              f"Fine-tune epochs: TF-MOT takes {min(speedups):.2f}x to {max(speedups):.2f}x the time of tfprune "
              f"(median {sorted(speedups)[len(speedups) // 2]:.2f}x)."]
    if "dense_seconds_per_epoch" in baseline_info:
        lines.append(f"Dense fine-tuning (no pruning, same recipe): {baseline_info['dense_seconds_per_epoch']:.1f} "
                     f"s/epoch, test accuracy {100 * baseline_info['dense_finetune_accuracy']:.2f} %.")
    return "\n".join(lines)


MODE = sweep.Mode(command="python -m tfprune.compare", prefix="compare", plot_prefix="compare_",
                  title="tfprune vs TF-MOT", dense_reference=True, summary=head_to_head)


def apply_defaults():
    """Switches the sweep flags to the comparison's defaults (call before parsing)."""
    for name, value in COMPARE_DEFAULTS.items():
        FLAGS.set_default(name, value)


def main(argv):
    return sweep.execute(argv, MODE)


def run():
    apply_defaults()
    cli.run(main)


if __name__ == "__main__":
    run()
