"""Trains (or loads from the cache) a reference baseline and prints its test accuracy.

    python -m tfprune.train_main --dataset=fashion_mnist --model=fc_1000 --train_epochs=10
    python -m tfprune.train_main --model=lenet_300_100 --distribution_strategy=mirrored --cpu_devices=2
"""

from absl import flags
from absl import logging

from tfprune import distribute
from tfprune.cli import app as cli_app
from tfprune.cli import baseline_flags
from tfprune.cli import data_flags
from tfprune.cli import distribute_flags
from tfprune.experiments import baseline

for _module in (data_flags, baseline_flags, distribute_flags):
    flags.adopt_module_key_flags(_module)


def main(argv):
    cli_app.check_no_arguments(argv)
    logging.set_verbosity(logging.INFO)
    strategy = distribute_flags.make_strategy()  # before any op
    config = baseline_flags.baseline_config(verbose=1)
    result = baseline.train_baseline(config.model, config.dataset, epochs=config.train_epochs,
                                     batch_size=config.batch_size, learning_rate=config.learning_rate,
                                     seed=config.seed, data_dir=config.data_dir, cache_dir=config.cache_dir,
                                     train_size=config.train_size, strategy=strategy, keras=config.keras)
    described = distribute.describe(strategy)
    source = "cache" if result.from_cache else (f"trained in {result.train_seconds:.1f} s with "
                                                f"{described['distribution_strategy']}, {described['replicas']} "
                                                "replica(s)")
    print(f"{config.model} on {config.dataset}: test accuracy {100 * result.test_accuracy:.2f} %, "
          f"loss {result.test_loss:.4f} ({source}; {result.path})")


def run(argv=None):
    """The ``tfprune-train`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
