"""Per-layer pruning sensitivity: prune one layer at a time over a grid (others dense), suggest a per-layer plan.

    python -m tfprune.sensitivity --dataset=fashion_mnist --model=fc_1000 --max_drop=1 --output_dir=runs/sens
    python -m tfprune.sweep ... --layer_sparsity=runs/sens/plan.json --finetune_epochs=2

Writes sensitivity.csv/.json, sensitivity.png (one accuracy curve per layer) and plan.json: for each layer the
largest k whose one-layer-at-a-time accuracy drop stays within --max_drop percentage points. The plan is a dict
{layer: fraction} that ``tfprune.prune(model, layers=plan)`` and ``--layer_sparsity`` accept.
"""

import os
import shlex

from absl import flags
from absl import logging

from tfprune.select import scoring
from tfprune.cli import app as cli_app
from tfprune.cli import baseline_flags
from tfprune.cli import data_flags
from tfprune.cli import model_path_flags
from tfprune.cli import pruning_flags
from tfprune.experiments import config as config_lib
from tfprune.experiments import sensitivity

FLAGS = flags.FLAGS
for _module in (data_flags, baseline_flags, model_path_flags, pruning_flags):
    flags.adopt_module_key_flags(_module)

METHOD = flags.DEFINE_string("method", "weight", "Rank weights by |w| (weight), units by L2 norm (unit), blocks "
                             "of consecutive inputs by RMS (block_1x4, block_1x16, any block_<units>x<inputs>), or "
                             "a calibration method (wanda, wanda_kernel, taylor, taylor_unit, sparsegpt, unit_refit; "
                             "--calibration_size).")
flags.register_validator("method", lambda v: scoring.is_method(v) and not scoring.check_method(v).couples_channels,
                         message="--method must be weight, unit, a block method (block_1x4, block_1x16, "
                         "block_<units>x<inputs>) or a calibration method (wanda, taylor, sparsegpt, unit_refit...)")
MAX_DROP = flags.DEFINE_float("max_drop", 1.0, "Largest accuracy drop, in percentage points, a layer's planned k may "
                              "cost.", lower_bound=0.0)
cli_app.register_finite("max_drop")
EVAL_SIZE = flags.DEFINE_integer("eval_size", None, "Scan on a fixed subset of this many validation examples "
                                 "(default all; data without a validation split is scanned on 10,000 training "
                                 "examples, never on the test split).", lower_bound=1)

# The flags that chose the baseline: the "apply it" hint carries over those the user set.
BASELINE_FLAGS = ("data_dir", "data_memory_mib", "model_path", "train_epochs", "train_size", "batch_size",
                  "learning_rate", "seed", "cache_dir")


def sensitivity_config():
    """The ``SensitivityConfig`` of the parsed flags."""
    baseline = baseline_flags.baseline_config(model_path_flags.MODEL_PATH.value, model_path_flags.ALLOW_UNSAFE.value)
    return config_lib.SensitivityConfig(
        output_dir=pruning_flags.OUTPUT_DIR.value, baseline=baseline, method=METHOD.value,
        sparsities=tuple(pruning_flags.SPARSITIES.value), layers=pruning_flags.LAYERS.value, max_drop=MAX_DROP.value,
        eval_size=EVAL_SIZE.value, calibration_size=pruning_flags.CALIBRATION_SIZE.value)


def main(argv):
    cli_app.check_no_arguments(argv)
    logging.set_verbosity(logging.WARNING)
    with cli_app.usage_errors():
        config = sensitivity_config()
        sensitivity.run_sensitivity(config, report=lambda line: print(line, flush=True))
    same_baseline = "".join(f" --{name}={FLAGS[name].value}" for name in BASELINE_FLAGS if FLAGS[name].present)
    print(f"apply it: python -m tfprune.sweep --dataset={shlex.quote(data_flags.DATASET.value)} "
          f"--model={baseline_flags.MODEL.value}"
          f"{same_baseline} --methods={METHOD.value} --layer_sparsity={os.path.join(config.output_dir, 'plan.json')} "
          "--finetune_epochs=2 --output_dir=<dir>")


def run(argv=None):
    """The ``tfprune-sensitivity`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
