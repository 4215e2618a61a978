"""tfprune vs TF-MOT, side by side: same trained baseline, data, schedule, step count, batch and optimizer.

    python -m tfprune.compare --flagfile=flags/compare_fashion_mnist_fc1000.flags
    python -m tfprune.compare --dataset=mnist --data_dir=../shared/data/mnist --output_dir=runs/cmp

Takes every flag of ``tfprune.sweep`` (see --helpfull), with the comparison's defaults in front of the command
line (``DEFAULT_ARGS``: methods weight, unit and tfmot, 2 fine-tune epochs on TF-MOT's PolynomialDecay), so any of
them can still be given. Besides the sweep's per-point figures it fine-tunes the unpruned model the same way (the
dense reference), so every point gets its fine-tune time per epoch as a ratio to dense training, and writes
compare.csv, compare.json, compare.md (with the head-to-head table) and compare_accuracy_vs_k.png (three methods as
three lines, the dense baseline as a horizontal line).
"""

import sys

from absl import flags

from tfprune.cli import app as cli_app
from tfprune.cli import sweep as sweep_main
from tfprune.experiments import compare

flags.adopt_module_key_flags(sweep_main)

DEFAULT_ARGS = (f"--finetune_epochs={compare.FINETUNE_EPOCHS}", "--schedule=polynomial",
                f"--methods={','.join(compare.METHODS)}")


def with_defaults(argv):
    """``argv`` with ``DEFAULT_ARGS`` inserted after the program name: flags given later (on the command line or in
    a flagfile) override them."""
    return [argv[0], *DEFAULT_ARGS, *argv[1:]]


def main(argv):
    sweep_main.execute(argv, compare.COMPARE, "python -m tfprune.compare")


def run(argv=None):
    """The ``tfprune-compare`` console script."""
    cli_app.run(main, with_defaults(argv or sys.argv))


if __name__ == "__main__":
    run()
