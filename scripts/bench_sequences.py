"""Row-sequential Fashion-MNIST: an LSTM, a Conv1D and an attention classifier, pruned, fine-tuned, shrunk, exported.

    scripts/bench.sh sequences      # the LSTM and the Conv1D models (about 40 minutes on 2 cores)
    scripts/bench.sh sequences --models=attention

Each 28×28 image is read as 28 steps of 28 features (its rows). The script trains each model (``--train_epochs``,
Adam, the 60,000 training images), saves it as ``.keras``, then runs tfprune's own sweep on that file: weight
pruning (kernel and recurrent kernel of the LSTM, the four attention projections) and unit pruning (LSTM hidden
units in every gate, Conv1D filters, attention heads)
at k = 0/50/90 %, each point fine-tuned ``--finetune_epochs`` while the sparsity ramps on TF-MOT's PolynomialDecay,
then exported to TFLite (float and int8) and verified in LiteRT (accuracy on 2,000 test images, size, one-thread
latency); unit points also export their physically shrunk model. Results: ``docs/results/sequences_<model>/``.
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
MODELS = ("lstm", "conv1d", "attention")
flags.DEFINE_list("models", ["lstm", "conv1d"], f"Which models to run: {', '.join(MODELS)}.")
flags.DEFINE_string("work_dir", "/tmp/tfprune_sequences", "Folder for the trained models.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST folder (see tfprune.load_dataset).")
flags.DEFINE_integer("train_epochs", 5, "Baseline training epochs.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 2, "Fine-tune epochs per pruned point.", lower_bound=0)
flags.DEFINE_list("sparsities", ["0", "50", "90"], "Percents k of the sweeps.")


def build(name, keras):
    """The model ``name`` on 28 steps of 28 features."""
    L = keras.layers
    if name == "attention":  # one transformer block: rows -> 64 features, 8 heads of 16, residual, LayerNorm
        rows = keras.Input((28, 28))
        x = L.Dense(64, activation="relu", name="embed")(rows)
        x = L.LayerNormalization(name="norm")(L.Add(name="residual")([
            x, L.MultiHeadAttention(num_heads=8, key_dim=16, name="mha")(x, x)]))
        x = L.GlobalAveragePooling1D(name="gap")(L.Dense(128, activation="relu", name="ffn")(x))
        return keras.Model(rows, L.Dense(10, activation="softmax", name="logits")(x), name=name)
    if name == "lstm":
        layers = [L.LSTM(128, name="lstm")]
    else:
        layers = [L.Conv1D(64, 3, activation="relu", name="conv1"), L.Conv1D(64, 3, activation="relu", name="conv2"),
                  L.MaxPooling1D(2, name="pool"), L.Conv1D(128, 3, activation="relu", name="conv3"),
                  L.GlobalAveragePooling1D(name="gap")]
    return keras.Sequential([keras.Input((28, 28))] + layers + [L.Dense(10, activation="softmax", name="logits")],
                            name=name)


def train(name):
    """Trains model ``name`` once (kept in ``--work_dir``) and returns its path."""
    path = os.path.join(FLAGS.work_dir, f"{name}_e{FLAGS.train_epochs}.keras")
    if os.path.exists(path):
        return path
    from tfprune._env import keras  # pylint: disable=g-import-not-at-top
    from tfprune.experiments import models  # pylint: disable=g-import-not-at-top
    from tfprune.experiments.data import builtin as data
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    model = models.compile_model(build(name, keras))
    start = time.perf_counter()
    model.fit(x, y, epochs=FLAGS.train_epochs, batch_size=128, verbose=2)
    _, accuracy = model.evaluate(xt, yt, verbose=0)
    print(f"{name}: trained {FLAGS.train_epochs} epochs in {time.perf_counter() - start:.0f} s, test accuracy "
          f"{100 * accuracy:.2f} %, {model.count_params():,} parameters", flush=True)
    model.save(path + ".tmp.keras")
    os.replace(path + ".tmp.keras", path)
    return path


def sweep(name, model_path):
    out = os.path.join(ROOT, "docs", "results", f"sequences_{name}")
    command = [sys.executable, "-m", "tfprune.sweep", f"--model_path={model_path}", "--dataset=fashion_mnist",
               "--methods=weight,unit", f"--sparsities={','.join(FLAGS.sparsities)}",
               f"--finetune_epochs={FLAGS.finetune_epochs}", "--schedule=polynomial", "--end_fraction=0.7",
               "--export=float,int8", "--export_eval_size=2000", f"--output_dir={out}", "--resume", "--verbose=0"]
    if FLAGS.data_dir:
        command.append(f"--data_dir={FLAGS.data_dir}")
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    print(f"{name} sweep: {time.perf_counter() - start:.0f} s; results in {out}/results.md", flush=True)


def main(argv):
    del argv
    bad = [m for m in FLAGS.models if m not in MODELS]
    if bad:
        raise app.UsageError(f"--models: unknown model(s) {bad}; known: {', '.join(MODELS)}")
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    for name in FLAGS.models:
        sweep(name, train(name))


if __name__ == "__main__":
    app.run(main)
