"""tfprune: rank-based weight and unit pruning for Keras, side by side with TF-MOT, exported to TFLite.

Sparsity is a fraction in [0, 1) everywhere in this API; the command-line tools take a percent k.
"""

from tfprune import _env  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from tfprune import models
from tfprune.baseline import Baseline, train_baseline
from tfprune.data import DatasetError, load_dataset

__version__ = "0.1.0"

__all__ = [
    "Baseline", "DatasetError", "load_dataset", "models", "train_baseline", "__version__",
]
