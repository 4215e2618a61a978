"""Exports a saved Keras model to TFLite variants, verifies each in LiteRT on real test images, prints the figures.

    tfprune-export --model_path=model.keras --variants=float,dynamic,int8,int8+sparse \
        --dataset=fashion_mnist --export_dir=/tmp/export

Each variant is written to ``<export_dir>/<variant>/`` (``model.tflite``, ``labels.txt``, ``model_card.json``)
and the table of all variants to ``<export_dir>/export.json``.
"""

import os
import tempfile

from absl import app
from absl import flags

from tfprune.files import io_utils
from tfprune import outputs
from tfprune import tflite
from tfprune.files import user_model
from tfprune.cli import app as cli_app
from tfprune.cli import data_flags
from tfprune.cli import export_flags
from tfprune.cli import model_path_flags
from tfprune.experiments import config as config_lib
from tfprune.experiments.data import sources as data_sources

for _module in (data_flags, model_path_flags, export_flags):
    flags.adopt_module_key_flags(_module)

VARIANTS = flags.DEFINE_list("variants", ["float", "float16", "dynamic", "int8"],
                             f"TFLite variants to export, from: {', '.join(tflite.VARIANTS)}.")
cli_app.register_list_validator("variants", lambda values: parse_variants(values))
EVAL_IMAGES = flags.DEFINE_integer("eval_images", None,
                                   "Verify on a reproducible subset of this many test images (default: all).",
                                   lower_bound=1)
REPRESENTATIVE_SIZE = flags.DEFINE_integer("representative_size", 300, "Training images that calibrate int8 "
                                           "variants.", lower_bound=1)
NUM_THREADS = flags.DEFINE_integer("num_threads", 1, "LiteRT threads for evaluation and latency.", lower_bound=1)
BENCH_RUNS = flags.DEFINE_integer("bench_runs", 200, "Timed single-image invokes per variant (after 20 warm-up "
                                  "runs).", lower_bound=1)
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "Folder for the exported models and export.json (default: "
                                 "print only).")


def load_model(path, allow_unsafe=False):
    """Loads a .keras/.h5 model safely (``tfprune.files.user_model.load_user_model``): a file holding code is
    refused."""
    return user_model.load_user_model(path, allow_unsafe)


def _check_writable(folder):
    """Creates ``folder`` and writes a probe file in it; a folder that cannot take files is a usage error."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe"):
            pass
    except OSError as e:
        raise app.UsageError(f"--export_dir {folder!r}: cannot write there ({e})") from None


def parse_variants(values):
    """Validates a --variants list: known names (``tflite.VARIANTS``), at least one, no repeats."""
    if not values:
        raise ValueError(f"--variants is empty; give at least one of {', '.join(tflite.VARIANTS)}")
    for value in values:
        tflite.parse_variant(value)
    return config_lib.check_unique(values, "--variants", noun="variant")


def format_table(rows):
    """Fixed-width table of ``export_variant`` figures, one line per variant."""
    head = f"{'variant':<16}{'size KiB':>10}{'gzip KiB':>10}{'accuracy %':>12}{'loss':>9}{'latency ms':>12}  path"
    lines = [head]
    for r in rows:
        lines.append(f"{r['variant']:<16}{r['size_bytes'] / 1024:>10.1f}{r['gzip_size_bytes'] / 1024:>10.1f}"
                     f"{100 * r['accuracy']:>12.2f}{r['loss']:>9.4f}{r['latency_ms']:>12.4f}  {r['path']}")
    return "\n".join(lines)


def main(argv):
    cli_app.check_no_arguments(argv)
    model_path, export_dir = model_path_flags.MODEL_PATH.value, EXPORT_DIR.value
    if not model_path:
        raise app.UsageError("--model_path is required: the .keras or .h5 model to export")
    try:
        model = tflite.plain_model(load_model(model_path, model_path_flags.ALLOW_UNSAFE.value))
    except ValueError as e:  # ModelFileError / UnsafeModelError name the file
        raise app.UsageError(f"--model_path: {e}") from None
    dataset, seed = data_flags.DATASET.value, data_flags.SEED.value
    data = data_sources.load(dataset, data_flags.DATA_DIR.value, memory_bytes=data_flags.DATA_MEMORY_MIB.value << 20)
    x_eval, y_eval = data.test.take(EVAL_IMAGES.value, seed)
    representative = data.train.take(REPRESENTATIVE_SIZE.value, seed)[0]
    try:  # the same rule as the sweep's: the data's input shape and classes
        kind = user_model.check_compatible(model, x_eval, data.num_classes)
    except ValueError as e:
        raise app.UsageError(f"--model_path: {model_path}: {e}") from None
    if export_dir:
        _check_writable(export_dir)  # fail before the work, not after it
    appended = kind == outputs.LOGITS and export_flags.EXPORT_SOFTMAX.value
    print(f"{model_path} outputs {kind}; " + ("its files end in an appended softmax (probabilities)" if appended else
                                              f"its files output {kind} as the model does"))
    rows = []
    for variant in VARIANTS.value:
        out_dir = os.path.join(export_dir, variant) if export_dir else None
        rows.append(tflite.export_variant(model, variant, x_eval, y_eval, representative,
                                          num_threads=NUM_THREADS.value, bench_runs=BENCH_RUNS.value,
                                          bench_warmup=20, out_dir=out_dir, labels=list(data.class_names),
                                          card_extra={"data": data.card()},
                                          append_softmax=export_flags.EXPORT_SOFTMAX.value))
    print(f"{model_path} on {len(x_eval)} {dataset} test examples, {NUM_THREADS.value} thread(s):")
    print(format_table(rows))
    for r in rows:
        if r["fallback_reason"]:
            print(f"{r['variant']}: XNNPACK failed, ran builtin kernels ({r['fallback_reason']})")
    if export_dir:
        io_utils.write_json_atomic(os.path.join(export_dir, "export.json"),
                                   {"model_path": model_path, "dataset": dataset, "data": data.card(),
                                    "eval_images": len(x_eval),
                                    "variants": rows})
        print(f"wrote {export_dir}/<variant>/{{model.tflite,labels.txt,model_card.json}} and export.json")


def run(argv=None):
    """The ``tfprune-export`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
