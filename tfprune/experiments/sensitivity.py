"""Per-layer pruning sensitivity as a library: prune one layer at a time over a grid (the others dense), and
suggest a per-layer plan.

``run_sensitivity`` writes sensitivity.csv/.json, sensitivity.png (one accuracy curve per layer) and plan.json:
for each layer the largest k whose one-layer-at-a-time accuracy drop stays within ``max_drop`` percentage points.
The plan is a dict {layer: fraction} that ``tfprune.prune(model, layers=plan)`` and a sweep's ``layer_sparsity``
accept (``load_plan`` reads it back).
"""

import dataclasses
import json
import os

from tfprune.files import io_utils
from tfprune.select import masks
from tfprune import pruning
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments import models
from tfprune.experiments.results import plots
from tfprune.experiments import point
from tfprune.experiments import preflight
from tfprune.experiments.results import records
from tfprune.experiments.results import store
from tfprune.experiments import sweep
from tfprune.experiments.config import ConfigError, check_percents, check_unique


def scan(model, x, y, ks, method="weight", layers=None, progress=None, calibration=None):
    """Accuracy and loss with one layer pruned at a time.

    Args:
      model: trained plain or prunable model (not modified).
      x, y: evaluation images and labels.
      ks: percents in [0, 100).
      method: ``weight``, ``unit`` or a block method (``block_1x4``...).
      layers: names to scan (default: ``tfprune.pruning.default_layers``).
      progress: optional callable(layer, k, accuracy) called after each evaluation.
      calibration: for a calibration method (``wanda``, ``sparsegpt``...): training examples, as ``tfprune.prune``.

    Returns:
      {layer: [(k, accuracy, loss), ...]} in the order of ``ks``.

    Raises:
      ValueError: an unknown method or layer name (before any evaluation).
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
            pruning.prune(prunable, k / 100.0, method, layers=[name], calibration=calibration)
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


def _unique_keys(pairs, where):
    """A JSON object's ``(key, value)`` pairs as a dict, once no key repeats (``json`` keeps the last silently)."""
    check_unique([f"{k}={v}" for k, v in pairs], where, key=lambda item: item.split("=", 1)[0], noun="layer")
    return dict(pairs)


def load_plan(value):
    """A per-layer plan {layer: fraction} from a ``plan.json`` (as ``run_sensitivity`` writes it: fractions in
    [0, 1)) or from ``name=percent,...`` text (percents in [0, 100)).

    Raises:
      ConfigError: naming the flag, the file and the bad entry: unreadable or non-JSON file, a plan that is not an
        object {layer: number}, an empty plan, a value that is not a number or out of range, a missing '=', a layer
        named twice (inline or as a repeated JSON key).
    """
    if value.endswith(".json"):
        where = f"--layer_sparsity {value!r}"
        try:
            with open(value, encoding="utf-8") as f:
                loaded = json.load(f, object_pairs_hook=lambda pairs: _unique_keys(pairs, where))
        except ConfigError:
            raise
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read plan ({type(e).__name__}: {e})") from None
        plan = loaded.get("layer_sparsity", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(plan, dict):
            raise ConfigError(f"{where}: the plan is a JSON {type(plan).__name__}; expected an object "
                              '{"layer": fraction, ...} (or {"layer_sparsity": {...}} as sensitivity writes it)')
        out = {}
        for name, fraction in plan.items():
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
                raise ConfigError(f"{where}: layer {name!r} has {fraction!r}, not a number (a fraction in [0, 1))")
            try:
                out[str(name)] = masks.check_sparsity(fraction, f"layer {name!r}'s sparsity")
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
    else:
        out = {}
        items = value.split(",")
        for item in items:
            name, sep, percent = item.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--layer_sparsity entry {item!r} is not name=percent")
            out[name.strip()] = check_percents([percent], f"--layer_sparsity {name.strip()}")[0] / 100.0
        check_unique(items, "--layer_sparsity", key=lambda item: item.partition("=")[0].strip(), noun="layer")
        where = "--layer_sparsity"
    if not out:
        raise ConfigError(f"{where}: the plan names no layer")
    return out


def _check_layers(model, config):
    try:
        pruning.resolve_plan(pruning.make_prunable(model), 0.0, config.method,
                             list(config.layers) if config.layers is not None else None)
    except ValueError as e:
        raise ConfigError(f"--layers: {e}") from None


@dataclasses.dataclass(frozen=True)
class SensitivityResult:
    """What ``run_sensitivity`` found: the curves {layer: [(k, accuracy, loss)]}, the suggested plan
    {layer: fraction}, and the baseline accuracy on the evaluation images (fraction)."""
    curves: dict
    plan: dict
    baseline_accuracy: float


def run_sensitivity(config, report=print):
    """Scans every layer of the config's baseline and writes the curves, the plot and plan.json.

    Args:
      config: a ``SensitivityConfig``.
      report: called with each progress line (default ``print``).

    Returns:
      ``SensitivityResult``.

    Raises:
      ConfigError: an unknown layer or method, an unusable model file. DatasetError: the data cannot be loaded.
    """
    b = config.baseline
    datasets = sweep.load_data(b)
    if not b.model_path:  # layer names checked on the architecture, before a baseline is trained
        _check_layers(preflight.architecture(b, datasets), config)
    base, _ = sweep.load_start_model(b, datasets, report=report)
    if b.model_path:  # a model file is only loaded and evaluated: its layers are checked now, before the scan
        _check_layers(base.model, config)
    x, y, which = dataset_lib.choice_split(datasets, config.eval_size, b.seed)
    _, base_accuracy = models.compile_model(base.model).evaluate(x, y, batch_size=1024, verbose=0)
    report(f"baseline {b.label} on {b.dataset}: accuracy {100 * base_accuracy:.2f} % on {len(x)} {which} examples "
           "(plans are chosen on these, never on the test split)")
    try:
        curves = scan(base.model, x, y, config.sparsities, config.method,
                      list(config.layers) if config.layers else None,
                      progress=lambda n, k, a: report(f"  {n:<8} k={records.format_k(k):>4}%: "
                                                      f"accuracy {100 * a:6.2f} %"),
                      calibration=point.calibration_for(config.method, datasets.train, config.calibration_size,
                                                        b.seed))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    plan = suggest_plan(curves, base_accuracy, config.max_drop)
    out = config.output_dir
    with store.output_lock(out):
        _write(out, config, curves, plan, base_accuracy, which)
    report("suggested plan (largest k per layer within "
           f"{config.max_drop:g} points): " + ", ".join(f"{n}={100 * s:g}%" for n, s in plan.items()))
    return SensitivityResult(curves, plan, float(base_accuracy))


def _write(out, config, curves, plan, base_accuracy, which):
    rows = ["layer,k,accuracy,loss"] + [f"{n},{records.format_k(k)},{a:.6f},{l:.6f}"
                                        for n, pts in curves.items() for k, a, l in pts]
    io_utils.write_text_atomic(os.path.join(out, "sensitivity.csv"), "\n".join(rows) + "\n")
    io_utils.write_json_atomic(os.path.join(out, "sensitivity.json"),
                               {"baseline_accuracy": base_accuracy, "method": config.method, "curves": curves,
                                "evaluated_on": which})
    io_utils.write_json_atomic(os.path.join(out, "plan.json"),
                               {"layer_sparsity": plan, "method": config.method, "max_drop": config.max_drop,
                                "baseline_accuracy": base_accuracy, "evaluated_on": which})
    plots.sensitivity({n: [(k, a) for k, a, _ in pts] for n, pts in curves.items()},
                      os.path.join(out, "sensitivity.png"), base_accuracy)


__all__ = ["SensitivityResult", "load_plan", "run_sensitivity", "scan", "suggest_plan"]
