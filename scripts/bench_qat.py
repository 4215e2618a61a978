"""What sparsity-preserving QAT costs and gives, measured side by side in one run on fc_1000 / Fashion-MNIST.

    scripts/bench.sh qat                      # tf_keras: TF-MOT's prune-preserving QAT
    scripts/bench.sh qat --keras=3            # Keras 3: tfprune's fake-quantized layers

From the sweeps' cached 10-epoch baseline, fc1-fc4 are weight-pruned one-shot at ``--sparsity`` and fine-tuned
``--finetune_epochs`` epochs with the masks fixed. Then, in ``--rounds`` alternating rounds on one TensorFlow
thread, one epoch of plain fine-tuning of a copy of that model and one epoch of QAT of another copy are timed: the
issue's target is QAT epoch <= 1.3x a plain epoch (medians of the rounds). Last, every figure of the QAT model
after its epochs: Keras (fake-quantized) accuracy, its int8 TFLite file's accuracy in LiteRT, and beside them the
float model and its post-training int8 file; and whether the zeros are the same before QAT, after it and in the
int8 file (decoded).
"""

import statistics as stats_lib
import time

from absl import app
from absl import flags
from absl import logging

from tfprune import callbacks
from tfprune import distribute
from tfprune import pruning
from tfprune import quantization
from tfprune import tflite
from tfprune.experiments import models
from tfprune.experiments import point
from tfprune.experiments import qat_stage
from tfprune.experiments.baseline import train_baseline
from tfprune.experiments.data import builtin as data

FLAGS = flags.FLAGS
flags.DEFINE_enum("keras", "2", ["2", "3"], "The Keras stack: 2 (tf_keras, TF-MOT's PQAT) or 3 (tfprune's QAT).")
flags.DEFINE_float("sparsity", 0.9, "Fraction of fc1-fc4 weights pruned.", lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_integer("finetune_epochs", 2, "Fine-tune epochs after pruning, masks fixed.", lower_bound=0)
flags.DEFINE_integer("rounds", 3, "Alternating rounds of (plain epoch, QAT epoch).", lower_bound=1)
flags.DEFINE_integer("threads", 1, "TensorFlow threads.", lower_bound=1)
flags.DEFINE_float("qat_learning_rate", 1e-4, "Adam learning rate of QAT (and of the timed plain epochs).")
flags.DEFINE_string("data_dir", None, "Dataset folder (see tfprune.load_dataset).")


def _epoch_seconds(model, x, y):
    timer = callbacks.EpochTimer()
    model.fit(x, y, epochs=1, batch_size=128, verbose=0, callbacks=[timer, *quantization.zero_keepers(model)])
    return timer.seconds[0]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    distribute.set_threads(FLAGS.threads)
    datasets = data.load_dataset("fashion_mnist", FLAGS.data_dir)
    (x, y), (x_test, y_test) = datasets
    baseline = train_baseline("fc_1000", "fashion_mnist", epochs=10, datasets=datasets, verbose=0,
                              keras=FLAGS.keras)
    layers = [f"fc{i}" for i in range(1, 5)]
    prunable = pruning.make_prunable(baseline.model)
    pruning.prune(prunable, FLAGS.sparsity, "weight", layers=layers)
    if FLAGS.finetune_epochs:
        models.compile_model(prunable)
        prunable.fit(x, y, epochs=FLAGS.finetune_epochs, batch_size=128, verbose=0)
    pruned = pruning.strip(prunable)
    models.compile_model(pruned)
    float_accuracy = pruned.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1]
    print(f"fc_1000 on {'tf_keras' if FLAGS.keras == '2' else 'Keras 3'}: fc1-fc4 at {FLAGS.sparsity:.0%}, "
          f"fine-tuned {FLAGS.finetune_epochs} epochs; float test accuracy {100 * float_accuracy:.2f} %", flush=True)
    before = quantization.zero_masks(pruned)
    plain = models.compile_model(point.clone_with_weights(pruned), FLAGS.qat_learning_rate)
    qat_model = quantization.quantize_aware(pruned)
    models.compile_model(qat_model, FLAGS.qat_learning_rate, kind="probabilities")
    _epoch_seconds(plain, x[:1024], y[:1024])  # traced once each, outside the timed rounds
    _epoch_seconds(qat_model, x[:1024], y[:1024])
    plain_s, qat_s = [], []
    print(f"{'round':<7}{'plain epoch s':>15}{'QAT epoch s':>13}{'ratio':>8}  ({FLAGS.threads} thread(s); target "
          "<= 1.3)")
    for r in range(FLAGS.rounds):
        plain_s.append(_epoch_seconds(plain, x, y))
        qat_s.append(_epoch_seconds(qat_model, x, y))
        print(f"{r + 1:<7}{plain_s[-1]:>15.2f}{qat_s[-1]:>13.2f}{qat_s[-1] / plain_s[-1]:>8.2f}", flush=True)
    print(f"median {stats_lib.median(plain_s):>14.2f}{stats_lib.median(qat_s):>13.2f}"
          f"{stats_lib.median(qat_s) / stats_lib.median(plain_s):>8.2f}")
    qat_accuracy = qat_model.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1]
    inference = quantization.to_inference_model(qat_model)
    representative = x[:300]
    start = time.perf_counter()
    qat_int8 = tflite.to_tflite(inference, "int8", representative_data=representative)
    convert_s = time.perf_counter() - start
    ptq_int8 = tflite.to_tflite(pruned, "int8", representative_data=representative)
    qat_litert = tflite.evaluate_tflite(qat_int8, x_test, y_test)["accuracy"]
    ptq_litert = tflite.evaluate_tflite(ptq_int8, x_test, y_test)["accuracy"]
    kept, extra = qat_stage.int8_zeros(qat_int8, before)
    same = quantization.zero_masks(inference)
    same = same.keys() == before.keys() and all((same[n] == before[n]).all() for n in before)
    print(f"after {FLAGS.rounds} QAT epochs (lr {FLAGS.qat_learning_rate:g}; the float copy had {FLAGS.rounds} more "
          "plain epochs at that rate):")
    print(f"  float model               {100 * float_accuracy:6.2f} %  (before the timed rounds)")
    print(f"  float model + plain epochs {100 * plain.evaluate(x_test, y_test, verbose=0, batch_size=1024)[1]:5.2f} %")
    print(f"  post-training int8 TFLite {100 * ptq_litert:6.2f} %  (LiteRT, 10,000 test images)")
    print(f"  QAT Keras (fake-quant)    {100 * qat_accuracy:6.2f} %")
    print(f"  QAT int8 TFLite           {100 * qat_litert:6.2f} %  (LiteRT; converted in {convert_s:.1f} s)")
    print(f"  QAT int8 - float          {100 * (qat_litert - float_accuracy):+6.2f} points (target >= -0.3)")
    print(f"  zeros: {sum(m.sum() for m in before.values()):,} before QAT; the same after QAT: {same}; "
          f"all zero in the int8 file: {kept} (+{extra:,} weights int8 rounding made zero)")


if __name__ == "__main__":
    app.run(main)
