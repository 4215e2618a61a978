"""Trains (or loads from the cache) a reference baseline and prints its test accuracy.

    python -m tfprune.train_main --dataset=fashion_mnist --model=fc_1000 --train_epochs=10
    python -m tfprune.train_main --model=lenet_300_100 --distribution_strategy=mirrored --cpu_devices=2
"""

from absl import app
from absl import flags
from absl import logging

from tfprune import baseline
from tfprune import cli
from tfprune import cli_flags
from tfprune import distribute

FLAGS = flags.FLAGS
cli_flags.define_common()
distribute.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    strategy = cli_flags.make_strategy()  # before any op
    result = baseline.train_baseline(FLAGS.model, FLAGS.dataset, epochs=FLAGS.train_epochs,
                                     batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
                                     seed=FLAGS.seed, data_dir=FLAGS.data_dir, cache_dir=FLAGS.cache_dir,
                                     train_size=FLAGS.train_size, strategy=strategy)
    described = distribute.describe(strategy)
    source = "cache" if result.from_cache else (f"trained in {result.train_seconds:.1f} s with "
                                                f"{described['distribution_strategy']}, {described['replicas']} "
                                                "replica(s)")
    print(f"{FLAGS.model} on {FLAGS.dataset}: test accuracy {100 * result.test_accuracy:.2f} %, "
          f"loss {result.test_loss:.4f} ({source}; {result.path})")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
