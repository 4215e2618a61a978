"""Flags naming the data: ``--dataset``, ``--data_dir`` and ``--seed`` (every main that reads data imports this)."""

from absl import flags

from tfprune.experiments import data as data_lib

DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", sorted(data_lib.DATASETS),
                            "Dataset to train, fine-tune and evaluate on (and to verify and calibrate exports).")
DATA_DIR = flags.DEFINE_string("data_dir", None,
                               "Folder searched first for the dataset (IDX .gz files or Keras' mnist.npz); then the "
                               "Keras cache, system dataset folders, and last a download.")
SEED = flags.DEFINE_integer("seed", 0, "Random seed: the same seed gives the same masks, subsets and accuracy.",
                            lower_bound=0, upper_bound=2**32 - 1)  # NumPy's seed range
