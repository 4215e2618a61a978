"""Exports a saved Keras model to TFLite variants, verifies each in LiteRT on real test images, prints the figures.

    tfprune-export --model_path=model.keras --variants=float,dynamic,int8,int8+sparse \
        --dataset=fashion_mnist --export_dir=/tmp/export

Each variant is written to ``<export_dir>/<variant>/`` (``model.tflite``, ``labels.txt``, ``model_card.json``)
and the table of all variants to ``<export_dir>/export.json``.
"""

import os

from absl import app
from absl import flags

from tfprune import cli
from tfprune import cli_flags
from tfprune import data as data_lib
from tfprune import export
from tfprune import io_utils

FLAGS = flags.FLAGS

LABELS = data_lib.CLASS_NAMES  # kept under this name for callers of the export main

cli_flags.define_model_path()  # shared with the sweep, so it is not globally required: main checks it
flags.DEFINE_list("variants", ["float", "float16", "dynamic", "int8"],
                  f"TFLite variants to export, from: {', '.join(export.VARIANTS)}.")
cli.register_list_validator("variants", lambda values: parse_variants(values))
# pylint: disable=protected-access  (shared flags are defined once when several mains are imported, as in tests)
cli_flags._define_once(flags.DEFINE_enum, "dataset", "fashion_mnist", sorted(data_lib.DATASETS),
                       "Dataset whose test images verify the export and whose training images calibrate int8.")
cli_flags._define_once(flags.DEFINE_string, "data_dir", None,
                       "Folder searched first for the dataset (see tfprune.load_dataset).")
flags.DEFINE_integer("eval_images", None,
                     "Verify on a reproducible subset of this many test images (default: all).", lower_bound=1)
flags.DEFINE_integer("representative_size", 300, "Training images that calibrate int8 variants.", lower_bound=1)
cli_flags._define_once(flags.DEFINE_integer, "seed", 0,
                       "Seed of the reproducible evaluation and calibration subsets.")
# pylint: enable=protected-access
flags.DEFINE_integer("num_threads", 1, "LiteRT threads for evaluation and latency.", lower_bound=1)
flags.DEFINE_integer("bench_runs", 200, "Timed single-image invokes per variant (after 20 warm-up runs).",
                     lower_bound=1)
flags.DEFINE_string("export_dir", None, "Folder for the exported models and export.json (default: print only).")


def load_model(path, allow_unsafe=False):
    """Loads a .keras/.h5 model safely (``tfprune.user_model.load_user_model``): a file holding code is refused."""
    from tfprune import user_model  # pylint: disable=g-import-not-at-top
    return user_model.load_user_model(path, allow_unsafe)


def parse_variants(values):
    """Validates a --variants list: known names (``export.VARIANTS``), at least one, no repeats."""
    if not values:
        raise ValueError(f"--variants is empty; give at least one of {', '.join(export.VARIANTS)}")
    for value in values:
        export.parse_variant(value)
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"--variants: {', '.join(repeated)} given more than once")
    return list(values)


def format_table(rows):
    """Fixed-width table of ``export_variant`` figures, one line per variant."""
    head = f"{'variant':<16}{'size KiB':>10}{'gzip KiB':>10}{'accuracy %':>12}{'loss':>9}{'latency ms':>12}  path"
    lines = [head]
    for r in rows:
        lines.append(f"{r['variant']:<16}{r['size_bytes'] / 1024:>10.1f}{r['gzip_size_bytes'] / 1024:>10.1f}"
                     f"{100 * r['accuracy']:>12.2f}{r['loss']:>9.4f}{r['latency_ms']:>12.4f}  {r['path']}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.model_path:
        raise app.UsageError("--model_path is required: the .keras or .h5 model to export")
    try:
        model = export.plain_model(load_model(FLAGS.model_path, FLAGS.allow_unsafe_deserialization))
    except ValueError as e:  # ModelFileError / UnsafeModelError name the file
        raise app.UsageError(f"--model_path: {e}") from None
    if FLAGS.export_dir:
        try:
            os.makedirs(FLAGS.export_dir, exist_ok=True)  # fail before the work, not after it
        except OSError as e:
            raise app.UsageError(f"--export_dir {FLAGS.export_dir!r}: {e}") from None
    (x_train, _), (x_test, y_test) = data_lib.load_dataset(FLAGS.dataset, FLAGS.data_dir)
    x_eval, y_eval = data_lib.take((x_test, y_test), FLAGS.eval_images, FLAGS.seed)
    representative = data_lib.take((x_train, x_train), FLAGS.representative_size, FLAGS.seed)[0]
    rows = []
    for variant in FLAGS.variants:
        out_dir = os.path.join(FLAGS.export_dir, variant) if FLAGS.export_dir else None
        rows.append(export.export_variant(model, variant, x_eval, y_eval, representative,
                                          num_threads=FLAGS.num_threads, bench_runs=FLAGS.bench_runs,
                                          bench_warmup=20, out_dir=out_dir, labels=LABELS[FLAGS.dataset]))
    print(f"{FLAGS.model_path} on {len(x_eval)} {FLAGS.dataset} test images, {FLAGS.num_threads} thread(s):")
    print(format_table(rows))
    for r in rows:
        if r["fallback_reason"]:
            print(f"{r['variant']}: XNNPACK failed, ran builtin kernels ({r['fallback_reason']})")
    if FLAGS.export_dir:
        io_utils.write_json_atomic(os.path.join(FLAGS.export_dir, "export.json"),
                                   {"model_path": FLAGS.model_path, "dataset": FLAGS.dataset,
                                    "eval_images": len(x_eval), "variants": rows})
        print(f"wrote {FLAGS.export_dir}/<variant>/{{model.tflite,labels.txt,model_card.json}} and export.json")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
