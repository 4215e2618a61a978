"""Per-layer pruning sensitivity: prune one layer at a time over a grid (others dense), suggest a per-layer plan.

    python -m tfprune.sensitivity --dataset=fashion_mnist --model=fc_1000 --max_drop=1 --output_dir=runs/sens
    python -m tfprune.sweep ... --layer_sparsity=runs/sens/plan.json --finetune_epochs=2

Writes sensitivity.csv/.json, sensitivity.png (one accuracy curve per layer) and plan.json: for each layer the
largest k whose one-layer-at-a-time accuracy drop stays within --max_drop percentage points. The plan is a dict
{layer: fraction} that ``tfprune.prune(model, layers=plan)`` and ``--layer_sparsity`` accept.
"""

import os

from absl import app
from absl import flags
from absl import logging

from tfprune import baseline as baseline_lib
from tfprune import cli
from tfprune import cli_flags
from tfprune import data as data_lib
from tfprune import io_utils
from tfprune import models
from tfprune import plots
from tfprune import pruning

FLAGS = flags.FLAGS


def scan(model, x, y, ks, method="weight", layers=None, progress=None):
    """Accuracy and loss with one layer pruned at a time.

    Args:
      model: trained plain or prunable model (not modified).
      x, y: evaluation images and labels.
      ks: percents in [0, 100).
      method: ``weight`` or ``unit``.
      layers: names to scan (default: ``tfprune.pruning.default_layers``).
      progress: optional callable(layer, k, accuracy) called after each evaluation.

    Returns:
      {layer: [(k, accuracy, loss), ...]} in the order of ``ks``.
    """
    prunable = models.compile_model(pruning.make_prunable(model))
    dense_weights = prunable.get_weights()
    names = layers or pruning.default_layers(prunable, method)
    pruning.resolve_plan(prunable, 0.0, method, list(names))  # validates names before any work
    curves = {}
    for name in names:
        curves[name] = []
        for k in ks:
            prunable.set_weights(dense_weights)
            pruning.prune(prunable, k / 100.0, method, layers=[name])
            loss, accuracy = prunable.evaluate(x, y, batch_size=1024, verbose=0)
            curves[name].append((float(k), float(accuracy), float(loss)))
            if progress:
                progress(name, k, accuracy)
    return curves


def suggest_plan(curves, baseline_accuracy, max_drop):
    """{layer: fraction}: the largest k per layer whose accuracy is within ``max_drop`` points of the baseline.

    Args:
      max_drop: allowed drop in percentage points (1.0 = one point of accuracy).
    """
    plan = {}
    for name, points in curves.items():
        ok = [k for k, accuracy, _ in points if 100 * (baseline_accuracy - accuracy) <= max_drop]
        plan[name] = max(ok, default=0.0) / 100.0
    return plan


def _define_flags():
    cli_flags.define_common()
    cli_flags.define_pruning_common()
    flags.DEFINE_enum("method", "weight", ["weight", "unit"], "Rank weights by |w| or units by L2 norm.")
    flags.DEFINE_float("max_drop", 1.0, "Largest accuracy drop, in percentage points, a layer's planned k may cost.",
                       lower_bound=0.0)
    flags.DEFINE_integer("eval_size", None, "Evaluate on a fixed subset of this many test images (default all).",
                         lower_bound=1)


_define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    ks = cli.parse_percents(FLAGS.sparsities)
    datasets = data_lib.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    base = baseline_lib.train_baseline(FLAGS.model, FLAGS.dataset, epochs=FLAGS.train_epochs,
                                       batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                       seed=FLAGS.seed, cache_dir=FLAGS.cache_dir, train_size=FLAGS.train_size,
                                       datasets=datasets)
    x, y = data_lib.take(datasets[1], FLAGS.eval_size, FLAGS.seed)
    _, base_accuracy = models.compile_model(base.model).evaluate(x, y, batch_size=1024, verbose=0)
    print(f"baseline {FLAGS.model} on {FLAGS.dataset}: accuracy {100 * base_accuracy:.2f} % on {len(x)} images",
          flush=True)
    try:
        curves = scan(base.model, x, y, ks, FLAGS.method, FLAGS.layers,
                      progress=lambda n, k, a: print(f"  {n:<8} k={k:>4g}%: accuracy {100 * a:6.2f} %", flush=True))
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    plan = suggest_plan(curves, base_accuracy, FLAGS.max_drop)
    out = FLAGS.output_dir
    rows = ["layer,k,accuracy,loss"] + [f"{n},{k:g},{a:.6f},{l:.6f}" for n, pts in curves.items() for k, a, l in pts]
    io_utils.write_text_atomic(os.path.join(out, "sensitivity.csv"), "\n".join(rows) + "\n")
    io_utils.write_json_atomic(os.path.join(out, "sensitivity.json"),
                               {"baseline_accuracy": base_accuracy, "method": FLAGS.method, "curves": curves})
    io_utils.write_json_atomic(os.path.join(out, "plan.json"),
                               {"layer_sparsity": plan, "method": FLAGS.method, "max_drop": FLAGS.max_drop,
                                "baseline_accuracy": base_accuracy})
    plots.sensitivity({n: [(k, a) for k, a, _ in pts] for n, pts in curves.items()},
                      os.path.join(out, "sensitivity.png"), base_accuracy)
    print("suggested plan (largest k per layer within "
          f"{FLAGS.max_drop:g} points): " + ", ".join(f"{n}={100 * s:g}%" for n, s in plan.items()))
    # The same baseline: carry over every flag that chose it and differs from its default.
    same_baseline = "".join(f" --{name}={FLAGS[name].value}" for name in
                            ("data_dir", "model_path", "train_epochs", "train_size", "batch_size", "learning_rate",
                             "seed", "cache_dir")
                            if name in FLAGS and FLAGS[name].present)
    print(f"apply it: python -m tfprune.sweep --dataset={FLAGS.dataset} --model={FLAGS.model}{same_baseline} "
          f"--methods={FLAGS.method} --layer_sparsity={os.path.join(out, 'plan.json')} --finetune_epochs=2 "
          f"--output_dir=<dir>")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
