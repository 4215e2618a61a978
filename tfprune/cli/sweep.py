"""How much of this network can I delete? Sweeps pruning methods over k and writes tables and plots.

    python -m tfprune.sweep --flagfile=flags/fashion_mnist_fc1000.flags --output_dir=runs/fm
    python -m tfprune.sweep --flagfile=flags/smoke.flags --output_dir=/tmp/smoke

For every (method, k) point it prunes a copy of the cached trained baseline, optionally fine-tunes, and records
test accuracy/loss, achieved sparsity (overall and per layer), remaining weights and sizes (plus TFLite figures
with --export). Each finished point is written at once (atomically); --resume skips finished points, so a killed
sweep loses at most the point in flight. --num_shards/--shard_index split the points across independent jobs;
--merge combines the output dirs of shards into one set of tables and plots. --distribution_strategy runs every
point under tf.distribute (mirrored over GPUs, or over --cpu_devices to try it; multi_worker_mirrored from
TF_CONFIG, where only the chief writes --output_dir).
"""

import atexit
import dataclasses
import shlex
import shutil
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

from tfprune import distribute
from tfprune.cli import app as cli_app
from tfprune.cli import baseline_flags
from tfprune.cli import data_flags
from tfprune.cli import distribute_flags
from tfprune.cli import export_flags
from tfprune.cli import model_path_flags
from tfprune.cli import pruning_flags
from tfprune.cli import qat_flags
from tfprune.experiments import config as config_lib
from tfprune.experiments import sensitivity
from tfprune.experiments import sweep
from tfprune.tflite import convert

FLAGS = flags.FLAGS
for _module in (data_flags, baseline_flags, model_path_flags, pruning_flags, distribute_flags,
                export_flags, qat_flags):
    flags.adopt_module_key_flags(_module)

METHODS = flags.DEFINE_list(
    "methods", ["weight", "unit"], "Pruning methods to sweep: weight, unit, group, group_mean, group_max (tfprune "
    "rank pruning; the group methods prune coupled channel groups, e.g. a residual stage, and shrink them), "
    "block_1x4, block_1x16 (blocks of 4 or 16 consecutive inputs of one unit, ranked by RMS: TFLite's sparse "
    "float and int8 kernels; block_l1_1x4 ranks by mean |w|; any block_<units>x<inputs>), nm_2x4, nm_1x4 (N:M: the "
    "n largest |w| of every m consecutive inputs of each unit kept, any nm_<n>x<m>; k is 100·(1 - n/m) or 0, "
    "--scope=layer), lamp (magnitude, LAMP "
    "scores across layers in global scope), the calibration methods wanda, wanda_kernel, taylor, taylor_unit, "
    "sparsegpt, unit_refit (they read --calibration_size training examples), tfmot, tfmot_block_1x4, "
    "tfmot_block_1x16, tfmot_nm_2x4 (TF-MOT prune_low_magnitude, unstructured, with block_size, or with "
    "sparsity_m_by_n=(m - n, m) for tfmot_nm_<n>x<m> on Dense and Conv2D; need --finetune_epochs >= 1).")
LAYER_SPARSITY = flags.DEFINE_string(
    "layer_sparsity", None, "A per-layer plan instead of --sparsities: a JSON file written by tfprune.sensitivity, "
    "or name=percent pairs, e.g. fc1=90,fc2=95.")
SCOPE = flags.DEFINE_enum("scope", "layer", ["layer", "global"],
                          "Rank within each layer, or all selected layers together.")
FINETUNE_EPOCHS = flags.DEFINE_integer(
    "finetune_epochs", 0, "Fine-tune epochs after/while pruning; 0 = one-shot prune and evaluate.", lower_bound=0)
SCHEDULE = flags.DEFINE_enum(
    "schedule", "polynomial", list(config_lib.SCHEDULES),
    "Pruning schedule during fine-tuning (TF-MOT's PolynomialDecay/ConstantSparsity, or one-shot).")
BEGIN_FRACTION = flags.DEFINE_float("begin_fraction", 0.0, "Scheduled pruning starts at this fraction of the "
                                    "fine-tune steps.", lower_bound=0.0, upper_bound=1.0)
END_FRACTION = flags.DEFINE_float("end_fraction", 0.7, "The polynomial schedule reaches k at this fraction of the "
                                  "fine-tune steps.", lower_bound=0.0, upper_bound=1.0)
PRUNING_FREQUENCY = flags.DEFINE_integer("pruning_frequency", 100, "Steps between mask updates of scheduled pruning.",
                                         lower_bound=1)
EXPORT = flags.DEFINE_list(
    "export", [], "TFLite variants to export and verify in LiteRT (accuracy, size, latency) for every point, into "
    f"OUTPUT_DIR/tflite/<point>/<variant>/; any of {', '.join(convert.VARIANTS)}. Unit points also export their "
    "physically shrunk model.")
EXPORT_EVAL_SIZE = flags.DEFINE_integer("export_eval_size", 2000, "Test images used to verify exported TFLite models.",
                                        lower_bound=1)
GZIP_SIZE = flags.DEFINE_bool(
    "gzip_size", False, "Also measure every point's weights as an HDF5 file and gzipped (a 'gzip size KiB' column "
    "and size_vs_k.png of it): about half a test evaluation per fc_1000 point, so only when asked.")
RESUME = flags.DEFINE_bool("resume", False, "Skip points already finished in --output_dir (else existing points are "
                           "an error).")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split the points into this many independent jobs.", lower_bound=1)
SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this job runs, in [0, num_shards).", lower_bound=0)
MERGE = flags.DEFINE_list("merge", None, "Only merge: read the points of these output dirs (shards) and write tables "
                          "and plots into --output_dir.")
VERBOSE = flags.DEFINE_integer("verbose", 2, "Keras training output: 0 silent, 1 progress bar, 2 one line per epoch.")

cli_app.register_finite("begin_fraction", "end_fraction")
flags.register_multi_flags_validator(
    ["qat_epochs", "export"], lambda f: not f["qat_epochs"] or config_lib.int8_variants(f["export"] or []),
    message="--qat_epochs needs an int8 TFLite variant in --export (int8 or int8+sparse): QAT's figures are its "
    "int8 files'")
flags.register_multi_flags_validator(
    ["begin_fraction", "end_fraction"], lambda f: f["begin_fraction"] <= f["end_fraction"],
    message="--begin_fraction must be <= --end_fraction (pruning must begin before its ramp ends)")
cli_app.register_list_validator("methods", config_lib.check_methods)
flags.register_multi_flags_validator(["num_shards", "shard_index"], lambda f: f["shard_index"] < f["num_shards"],
                                     message="--shard_index must be < --num_shards")
flags.register_multi_flags_validator(
    ["methods", "finetune_epochs"],
    lambda f: not any(map(config_lib.is_tfmot, f["methods"] or [])) or f["finetune_epochs"] >= 1,
    message="--methods=tfmot needs --finetune_epochs >= 1 (TF-MOT applies its masks during training)")
flags.register_multi_flags_validator(
    ["methods", "scope"], lambda f: not any(map(config_lib.is_tfmot, f["methods"] or [])) or f["scope"] == "layer",
    message="--methods=tfmot supports --scope=layer only")


cli_app.register_list_validator("export", config_lib.check_variants)
cli_app.register_list_validator("merge", lambda values: config_lib.check_unique(values, "--merge", noun="folder"))


def sweep_config(output_dir):
    """The ``SweepConfig`` of the parsed flags, writing into ``output_dir``.

    Raises:
      ConfigError: a bad --layer_sparsity plan, or settings that cannot work together.
    """
    plan = sensitivity.load_plan(LAYER_SPARSITY.value) if LAYER_SPARSITY.value else None
    finetune = config_lib.FineTune(
        epochs=FINETUNE_EPOCHS.value, schedule=SCHEDULE.value, batch_size=baseline_flags.BATCH_SIZE.value,
        learning_rate=baseline_flags.LEARNING_RATE.value, begin_fraction=BEGIN_FRACTION.value,
        end_fraction=END_FRACTION.value, frequency=PRUNING_FREQUENCY.value, verbose=VERBOSE.value,
        calibration_size=pruning_flags.CALIBRATION_SIZE.value, **qat_flags.finetune_fields())
    baseline = baseline_flags.baseline_config(model_path_flags.MODEL_PATH.value, model_path_flags.ALLOW_UNSAFE.value,
                                              VERBOSE.value)
    return config_lib.SweepConfig(
        output_dir=output_dir, baseline=baseline, methods=tuple(METHODS.value),
        sparsities=tuple(pruning_flags.SPARSITIES.value), layers=pruning_flags.LAYERS.value, layer_sparsity=plan,
        scope=SCOPE.value, finetune=finetune, export=tuple(EXPORT.value), export_eval_size=EXPORT_EVAL_SIZE.value,
        export_softmax=export_flags.EXPORT_SOFTMAX.value, gzip_size=GZIP_SIZE.value, resume=RESUME.value,
        num_shards=NUM_SHARDS.value, shard_index=SHARD_INDEX.value)


def command_line(command):
    """``command`` followed by this process's arguments, shell-quoted (the tables' "Produced by")."""
    return " ".join([command] + [shlex.quote(a) for a in sys.argv[1:]])


def make_strategy():
    """``(strategy or None for off, the output folder this process writes)``, built before any TensorFlow op.

    A non-chief worker of a cluster gets a throwaway output folder (Model Garden style): every worker runs every
    point (the training steps are collectives), only the chief's files are kept.
    """
    output_dir = pruning_flags.OUTPUT_DIR.value
    strategy = distribute_flags.make_strategy()
    described = distribute.describe(strategy)
    if described["distribution_strategy"] == "off":
        return None, output_dir  # no scope at all: the library's plain code path
    note = ""
    if not distribute.is_chief(strategy):
        output_dir = tempfile.mkdtemp(prefix="tfprune_worker_")
        atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
        note = f"; not the chief: results go to the throwaway {output_dir}"
    print(f"distribution: {described['distribution_strategy']}, {described['replicas']} replicas in sync{note}",
          flush=True)
    return strategy, output_dir


def _report(line):
    print(line, flush=True)


def execute(argv, mode=sweep.SWEEP, command="python -m tfprune.sweep"):
    """The sweep (or, with another ``mode``, the comparison): validated flags in, point records and tables out."""
    cli_app.check_no_arguments(argv)
    logging.set_verbosity(logging.WARNING)
    with cli_app.usage_errors():
        if MERGE.value:
            return sweep.merge(MERGE.value, pruning_flags.OUTPUT_DIR.value, mode, command_line(command), _report)
        config = sweep_config(pruning_flags.OUTPUT_DIR.value)  # checked before the strategy and any TF op
        strategy, output_dir = make_strategy()
        if output_dir != config.output_dir:
            config = dataclasses.replace(config, output_dir=output_dir)
        return sweep.run_sweep(config, mode, strategy, command_line(command), _report)


def main(argv):
    execute(argv)


def run(argv=None):
    """The ``tfprune-sweep`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
