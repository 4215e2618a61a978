"""Which model do I put in the app? Searches pruning x quantization for the most accurate TFLite file that fits a
device budget, each candidate measured in LiteRT.

    python -m tfprune.fit_budget --dataset=fashion_mnist --model=fc_1000 --max_size_kib=100 --output_dir=runs/b100
    python -m tfprune.fit_budget --model_path=model.keras --dataset=npz:data.npz --max_latency_ms=0.02 \\
        --num_threads=4 --min_accuracy=88 --output_dir=runs/fast

Budgets: --max_size_kib (the .tflite file), --max_latency_ms (LiteRT median single-image latency at --num_threads)
and/or --min_accuracy (percent, LiteRT on the test images); with a size or latency budget the search maximises
accuracy under it, with --min_accuracy alone it minimises the file. It walks each family of --families (unit pruning
+ shrink, block 1x16, block 1x4, unstructured weight pruning; each pruned while fine-tuning, on the layers
per-layer sensitivity keeps) along the ladder of k (--sparsities, default 50..99), exporting and measuring every
file. Writes OUTPUT_DIR/chosen/{model.tflite,labels.txt,model_card.json}, candidates.md (every file measured),
frontier.md/png and points/ + candidates/ (every probe: --resume continues a killed search, or reuses a folder's
probes under another budget). A budget nothing meets: one line naming the closest candidate, exit 1.
"""

import shlex
import sys

from absl import flags
from absl import logging

from tfprune.cli import app as cli_app
from tfprune.cli import baseline_flags
from tfprune.cli import data_flags
from tfprune.cli import export_flags
from tfprune.cli import qat_flags
from tfprune.cli import model_path_flags
from tfprune.cli import pruning_flags
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments import config as config_lib
from tfprune.experiments.budget import fit as fit_budget

FLAGS = flags.FLAGS
for _module in (data_flags, baseline_flags, model_path_flags, pruning_flags, export_flags, qat_flags):
    flags.adopt_module_key_flags(_module)

MAX_SIZE_KIB = flags.DEFINE_float("max_size_kib", None, "Largest .tflite file, KiB.", lower_bound=0.0)
MAX_LATENCY_MS = flags.DEFINE_float("max_latency_ms", None, "Largest LiteRT median single-image latency, ms, at "
                                    "--num_threads.", lower_bound=0.0)
MIN_ACCURACY = flags.DEFINE_float("min_accuracy", None, "Lowest test accuracy, percent (LiteRT).", lower_bound=0.0,
                                  upper_bound=100.0)
NUM_THREADS = flags.DEFINE_integer("num_threads", 1, "LiteRT threads of every measurement.", lower_bound=1)
FAMILIES = flags.DEFINE_list("families", list(budget_lib.DEFAULT_FAMILIES),
                             f"Pruning families to search: {', '.join(budget_lib.FAMILIES)}.")
cli_app.register_list_validator("families", budget_lib.check_families)
FINETUNE_EPOCHS = flags.DEFINE_integer("finetune_epochs", 2, "Fine-tune epochs of every probe, pruning on TF-MOT's "
                                       "PolynomialDecay.", lower_bound=1)
END_FRACTION = flags.DEFINE_float("end_fraction", 0.7, "The ramp reaches k at this fraction of the fine-tune steps.",
                                  lower_bound=0.0, upper_bound=1.0)
SHRUNK_EPOCHS = flags.DEFINE_integer("shrunk_epochs", 10, "Further epochs of a unit probe's shrunk model (Adam, "
                                     "cosine decay).",
                                     lower_bound=0)
EVAL_SIZE = flags.DEFINE_integer("eval_size", 10000, "Test images every file is measured on.", lower_bound=1)
MAX_DROP = flags.DEFINE_float("max_drop", 2.0, "Sensitivity: a layer whose one-shot 50 or 90 % pruning alone costs "
                              "more accuracy points than this stays dense, if it holds under 2 % of the weights "
                              "(unless --layers names the layers).", lower_bound=0.0)
RESUME = flags.DEFINE_bool("resume", False, "Reuse the probes already in --output_dir (a killed search, or another "
                           "budget on the same model and settings).")
cli_app.register_finite("max_size_kib", "max_latency_ms", "min_accuracy", "end_fraction", "max_drop")


def search_config():
    """The ``FitBudgetConfig`` of the parsed flags.

    Raises:
      ConfigError: no budget, a budget <= 0, or settings that cannot work together.
    """
    budget = budget_lib.Budget(MAX_SIZE_KIB.value, MAX_LATENCY_MS.value, MIN_ACCURACY.value)
    finetune = config_lib.FineTune(epochs=FINETUNE_EPOCHS.value, batch_size=baseline_flags.BATCH_SIZE.value,
                                   learning_rate=baseline_flags.LEARNING_RATE.value, end_fraction=END_FRACTION.value,
                                   verbose=0, calibration_size=pruning_flags.CALIBRATION_SIZE.value,
                                   **qat_flags.finetune_fields())
    baseline = baseline_flags.baseline_config(model_path_flags.MODEL_PATH.value, model_path_flags.ALLOW_UNSAFE.value,
                                              0)
    ladder = tuple(pruning_flags.SPARSITIES.value) if FLAGS["sparsities"].present else budget_lib.LADDER
    return fit_budget.FitBudgetConfig(
        output_dir=pruning_flags.OUTPUT_DIR.value, budget=budget, baseline=baseline, families=tuple(FAMILIES.value),
        ladder=ladder, layers=pruning_flags.LAYERS.value, finetune=finetune, shrunk_epochs=SHRUNK_EPOCHS.value,
        num_threads=NUM_THREADS.value, eval_size=EVAL_SIZE.value, max_drop=MAX_DROP.value,
        export_softmax=export_flags.EXPORT_SOFTMAX.value, resume=RESUME.value)


def main(argv):
    cli_app.check_no_arguments(argv)
    logging.set_verbosity(logging.WARNING)
    with cli_app.usage_errors():
        config = search_config()  # checked before any TensorFlow op
        try:
            fit_budget.run_fit_budget(config, report=lambda line: print(line, flush=True),
                                      command=" ".join(["python -m tfprune.fit_budget"]
                                                       + [shlex.quote(a) for a in sys.argv[1:]]))
        except fit_budget.BudgetError as e:
            sys.stderr.write(f"{sys.argv[0]}: {e}\n")
            sys.exit(cli_app.OS_ERROR_EXIT)


def run(argv=None):
    """The ``tfprune-fit-budget`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
