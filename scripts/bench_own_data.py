"""Your own data, end to end: a keras.applications MobileNetV2 on 32×32×3 images from an .npz, and a sweep that
streams an image folder too large for memory.

    scripts/bench.sh own_data                     # both parts
    scripts/bench.sh own_data --part=mobilenet    # MobileNetV2 sweep with export (about 40 minutes on 2 cores)
    scripts/bench.sh own_data --part=streaming    # streamed image-folder sweep with peak RSS
    scripts/bench.sh own_data --part=depthwise    # MobileNetV2 alpha 0.35: tfprune vs TF-MOT, depthwise kernels
    scripts/bench.sh own_data --part=groups       # MobileNetV2 alpha 0.35: group pruning 30/50 %, shrunk int8
    scripts/bench.sh own_data --part=oneshot      # MobileNetV2 alpha 0.35: one-shot 50 %, magnitude vs calibration
    scripts/bench.sh own_data --part=qat          # MobileNetV2 alpha 0.35: group 50 %, shrunk, QAT int8

``mobilenet``: writes real Fashion-MNIST padded to 32×32×3 as an ``.npz`` (55,000 training, 5,000 validation,
10,000 test images; ``scripts/own_data.py``), trains ``keras.applications.MobileNetV2(weights=None,
input_shape=(32, 32, 3), classes=10)`` on it (Adam, ``--train_epochs``), saves it as a ``.keras`` file — the
user's model — and runs ``python -m tfprune.sweep --model_path=... --dataset=npz:...`` on it with weight and unit
pruning, fine-tuning and TFLite export (float, int8), into ``docs/results/own_data_mobilenetv2``.

``depthwise``: trains ``MobileNetV2(alpha=0.35)`` the same way and runs ``python -m tfprune.compare`` on its file at
k = 50/75/90 %, one fine-tune epoch per point: tfprune's weight pruning reaches the 17 DepthwiseConv2D kernels, which
TF-MOT wraps but does not prune (``prune_registry``: ``DepthwiseConv2D: []``), into
``docs/results/compare_mobilenetv2_035``.

``groups``: the same MobileNetV2(alpha=0.35) file through ``python -m tfprune.compare --methods=group`` at k = 30
and 50 % of every channel group (its residual stages included), ``--finetune_epochs`` on TF-MOT's PolynomialDecay,
exported as int8 TFLite unshrunk and shrunk, into ``docs/results/groups_mobilenetv2_035_ft<epochs>``: accuracy against
the dense model fine-tuned alike, and the shrunk file's size and latency beside it.

``oneshot``: the same MobileNetV2(alpha=0.35) file pruned one-shot (no fine-tuning) at k = 30/50 % of every
kernel (the depthwise ones included) by magnitude and by the calibration methods (``wanda``, ``wanda_kernel``,
``taylor``, ``sparsegpt``; 1,024 training images), into ``docs/results/oneshot_mobilenetv2_035``.

``qat``: the same MobileNetV2(alpha=0.35) file group-pruned at 50 % with ``--finetune_epochs`` (at least 1), shrunk,
then ``--qat_epochs`` of sparsity-preserving QAT of the shrunk model (TF-MOT's prune-preserving scheme, tf_keras),
its int8 TFLite beside the post-training int8 one, into ``docs/results/qat_mobilenetv2_035``.

``streaming``: writes the same images resized to ``--stream_size`` pixels square (RGB PNG) as an image folder whose
decoded float32 pixels are far larger than ``--data_memory_mib``, runs a one-shot sweep of lenet_300_100 on it in a
child process with that memory budget, and prints the folder's size on disk, its decoded size and the child's peak
resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``).
"""

import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import own_data  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum("part", "all", ["all", "mobilenet", "streaming", "depthwise", "groups",
                                          "oneshot", "qat"], "Which part to run.")
flags.DEFINE_string("work_dir", "/tmp/tfprune_own_data", "Where the generated data and the trained model go.")
flags.DEFINE_string("output_dir", os.path.join(ROOT, "docs", "results", "own_data_mobilenetv2"),
                    "Folder of the MobileNetV2 sweep.")
flags.DEFINE_integer("train_epochs", 5, "MobileNetV2 training epochs.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 1, "Fine-tune epochs per sweep point.", lower_bound=0)
flags.DEFINE_list("sparsities", ["0", "50", "70", "90"], "Percents k of the MobileNetV2 sweep.")
flags.DEFINE_integer("stream_size", 160, "Side of the streamed folder's images, in pixels.", lower_bound=28)
flags.DEFINE_integer("stream_train", 60000, "Training images of the streamed folder.", lower_bound=100)
flags.DEFINE_integer("data_memory_mib", 1024, "Memory budget the streamed sweep runs under.", lower_bound=1)
flags.DEFINE_string("data_dir", None, "Fashion-MNIST folder (default: the usual search).")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs of --part=qat.", lower_bound=1)


def _run(cmd):
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def _npz():
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    npz = os.path.join(FLAGS.work_dir, "fashion32_rgb.npz")
    if not os.path.exists(npz):
        splits, names = own_data.make_splits(val=5000, data_dir=FLAGS.data_dir)
        own_data.write_npz(npz, splits, names)
    return npz


def _trained_mobilenet(npz, alpha=1.0):
    """Trains keras.applications.MobileNetV2(alpha) once on the npz (kept in --work_dir); returns its path."""
    suffix = "" if alpha == 1.0 else f"_a{alpha:g}"
    model_path = os.path.join(FLAGS.work_dir, f"mobilenetv2{suffix}_e{FLAGS.train_epochs}.keras")
    if not os.path.exists(model_path):
        from tfprune._env import keras  # pylint: disable=g-import-not-at-top
        from tfprune.experiments import models  # pylint: disable=g-import-not-at-top
        from tfprune.experiments.data import sources as data_sources
        keras.utils.set_random_seed(0)
        data = data_sources.load(f"npz:{npz}")
        model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=data.num_classes,
                                               alpha=alpha)
        for layer in model.layers:  # keras.applications' BN momentum 0.999 needs far more steps than 5 epochs give:
            if isinstance(layer, keras.layers.BatchNormalization):  # its moving statistics would still be at their
                layer.momentum = 0.9  # initial values, and inference-mode accuracy at chance (measured: 10.0 %)
        models.compile_model(model)
        start = time.perf_counter()
        model.fit(epochs=FLAGS.train_epochs, verbose=2, validation_data=(data.val.x, data.val.y),
                  **data.train.fit_inputs(128))
        _, accuracy = model.evaluate(verbose=0, **data.test.eval_inputs())
        print(f"MobileNetV2 trained {FLAGS.train_epochs} epochs in {time.perf_counter() - start:.0f} s: "
              f"test accuracy {100 * accuracy:.2f} %, {model.count_params():,} parameters", flush=True)
        model.save(model_path)
    return model_path


def mobilenet():
    npz = _npz()
    model_path = _trained_mobilenet(npz)
    seconds = _run([sys.executable, "-m", "tfprune.sweep", f"--model_path={model_path}", f"--dataset=npz:{npz}",
                    "--methods=weight,unit", f"--sparsities={','.join(FLAGS.sparsities)}",
                    f"--finetune_epochs={FLAGS.finetune_epochs}", "--schedule=polynomial", "--export=float,int8",
                    "--export_eval_size=2000", f"--output_dir={FLAGS.output_dir}", "--resume", "--verbose=0"])
    print(f"MobileNetV2 sweep: {seconds:.0f} s; results in {FLAGS.output_dir}/results.md")


def depthwise():
    """MobileNetV2 alpha 0.35: tfprune weight pruning (its 17 depthwise kernels included) against TF-MOT (which wraps
    DepthwiseConv2D but prunes no weight of it) on the same schedule, in docs/results/compare_mobilenetv2_035."""
    npz = _npz()
    model_path = _trained_mobilenet(npz, alpha=0.35)
    out = os.path.join(ROOT, "docs", "results", "compare_mobilenetv2_035")
    seconds = _run([sys.executable, "-m", "tfprune.compare", f"--model_path={model_path}", f"--dataset=npz:{npz}",
                    "--sparsities=50,75,90", "--finetune_epochs=1", f"--output_dir={out}", "--resume", "--verbose=0"])
    print(f"MobileNetV2 alpha 0.35 comparison: {seconds:.0f} s; results in {out}/results.md")


def groups():
    """MobileNetV2 alpha 0.35 group-pruned to 30 and 50 % of its channels with fine-tuning, shrunk int8 TFLite, in
    docs/results/groups_mobilenetv2_035_ft<epochs>."""
    npz = _npz()
    model_path = _trained_mobilenet(npz, alpha=0.35)
    epochs = max(FLAGS.finetune_epochs, 1)
    out = os.path.join(ROOT, "docs", "results", f"groups_mobilenetv2_035_ft{epochs}")
    seconds = _run([sys.executable, "-m", "tfprune.compare", f"--model_path={model_path}", f"--dataset=npz:{npz}",
                    "--methods=group", "--sparsities=30,50", f"--finetune_epochs={epochs}",
                    "--export=int8", "--export_eval_size=2000", f"--output_dir={out}", "--resume", "--verbose=0"])
    print(f"MobileNetV2 alpha 0.35 group pruning: {seconds:.0f} s; results in {out}/compare.md")


def qat():
    """MobileNetV2 alpha 0.35 group-pruned 50 % (fine-tuned --finetune_epochs, at least 1), shrunk, then
    sparsity-preserving QAT of the shrunk model (--qat_epochs) and its int8 TFLite beside post-training int8, in
    docs/results/qat_mobilenetv2_035."""
    npz = _npz()
    model_path = _trained_mobilenet(npz, alpha=0.35)
    out = os.path.join(ROOT, "docs", "results", "qat_mobilenetv2_035")
    seconds = _run([sys.executable, "-m", "tfprune.sweep", f"--model_path={model_path}", f"--dataset=npz:{npz}",
                    "--methods=group", "--sparsities=50", f"--finetune_epochs={max(FLAGS.finetune_epochs, 1)}",
                    f"--qat_epochs={FLAGS.qat_epochs}", "--export=int8", "--export_eval_size=2000",
                    f"--output_dir={out}", "--resume", "--verbose=0"])
    print(f"MobileNetV2 alpha 0.35 group 50 % with QAT: {seconds:.0f} s; results in {out}/results.md")


def oneshot():
    """MobileNetV2 alpha 0.35 pruned one-shot at 30 and 50 % by magnitude and the calibration methods, in
    docs/results/oneshot_mobilenetv2_035."""
    npz = _npz()
    model_path = _trained_mobilenet(npz, alpha=0.35)
    out = os.path.join(ROOT, "docs", "results", "oneshot_mobilenetv2_035")
    seconds = _run([sys.executable, "-m", "tfprune.sweep", f"--model_path={model_path}", f"--dataset=npz:{npz}",
                    "--methods=weight,wanda,wanda_kernel,taylor,sparsegpt", "--sparsities=0,30,50",
                    "--finetune_epochs=0", "--calibration_size=1024", f"--output_dir={out}", "--resume", "--verbose=0"])
    print(f"MobileNetV2 alpha 0.35 one-shot: {seconds:.0f} s; results in {out}/results.md")


def _folder_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(root) for f in names)


def streaming():
    root = os.path.join(FLAGS.work_dir, f"fashion{FLAGS.stream_size}_folder")
    if not os.path.isdir(os.path.join(root, "test")):
        splits, names = own_data.make_splits(train=FLAGS.stream_train, data_dir=FLAGS.data_dir)
        own_data.write_image_folder(root + ".tmp", splits, names, side=FLAGS.stream_size)
        os.replace(root + ".tmp", root)
    files = sum(len(n) for _, _, n in os.walk(root))
    decoded = files * FLAGS.stream_size ** 2 * 3 * 4
    out = os.path.join(FLAGS.work_dir, "streamed_sweep")
    seconds = _run([sys.executable, "-m", "tfprune.sweep", f"--dataset=images:{root}",
                    f"--data_memory_mib={FLAGS.data_memory_mib}", "--model=lenet_300_100", "--train_epochs=1",
                    "--methods=weight,unit", "--sparsities=0,50,90", "--finetune_epochs=0", "--verbose=2",
                    f"--output_dir={out}", f"--cache_dir={os.path.join(FLAGS.work_dir, 'cache')}"])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(f"streamed sweep: {files:,} PNG files, {_folder_bytes(root) / 2**30:.2f} GiB on disk, "
          f"{decoded / 2**30:.1f} GiB decoded (float32), memory budget {FLAGS.data_memory_mib} MiB; "
          f"peak RSS of the sweep {peak / 2**30:.2f} GiB ({peak / decoded:.3f} of the decoded size); {seconds:.0f} s")


def main(argv):
    del argv
    if FLAGS.part in ("all", "streaming"):  # first: the peak RSS it prints is the largest of any child so far
        streaming()
    if FLAGS.part in ("all", "mobilenet"):
        mobilenet()
    if FLAGS.part in ("all", "depthwise"):
        depthwise()
    if FLAGS.part in ("all", "groups"):
        groups()
    if FLAGS.part in ("all", "oneshot"):
        oneshot()
    if FLAGS.part in ("all", "qat"):
        qat()


if __name__ == "__main__":
    app.run(main)
