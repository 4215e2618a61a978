"""Trains (or loads from the cache) a reference baseline and prints its test accuracy.

    python -m tfprune.train_main --dataset=fashion_mnist --model=fc_1000 --train_epochs=10
"""

from absl import app
from absl import flags
from absl import logging

from tfprune import baseline
from tfprune import cli_flags

FLAGS = flags.FLAGS
cli_flags.define_common()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    result = baseline.train_baseline(FLAGS.model, FLAGS.dataset, epochs=FLAGS.train_epochs,
                                     batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                     seed=FLAGS.seed, data_dir=FLAGS.data_dir, cache_dir=FLAGS.cache_dir,
                                     train_size=FLAGS.train_size)
    source = "cache" if result.from_cache else f"trained in {result.train_seconds:.1f} s"
    print(f"{FLAGS.model} on {FLAGS.dataset}: test accuracy {100 * result.test_accuracy:.2f} %, "
          f"loss {result.test_loss:.4f} ({source}; {result.path})")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
