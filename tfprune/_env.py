"""TensorFlow import with the environment tfprune needs.

TF-MOT 0.8 works only with Keras 2 (``tf_keras``), so ``TF_USE_LEGACY_KERAS=1`` must be in force before
TensorFlow is first imported. Every tfprune module imports TensorFlow and both Keras stacks from here, never
directly: ``keras`` is tf_keras (Keras 2), ``keras3`` is Keras 3 (``import keras``, on the backend that
``KERAS_BACKEND`` names: TensorFlow, JAX or PyTorch).
"""

import os
import sys

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
elif os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    # TensorFlow was imported first by the caller: tf.keras may then be Keras 3, but tfprune and TF-MOT use
    # tf_keras explicitly, so everything below still works. Set the variable for any child process.
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402


class _DeferredModule:
    """Stands in for a module that is imported on first attribute access (then looked up there every time)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


def _import_keras3():
    """``import keras`` (Keras 3) without importing matplotlib: Keras 3 imports ``matplotlib.pyplot`` as it
    starts (a plotting backend chosen) only for ``keras.visualization.plot_image_gallery``. While Keras
    loads, matplotlib is hidden (its try-import fails); that module then gets a stand-in that imports pyplot when
    the gallery is first drawn, so it still works. Nothing changes when matplotlib or Keras is already loaded."""
    if "keras" in sys.modules or "matplotlib" in sys.modules:
        return importlib.import_module("keras")
    hidden = ("matplotlib", "matplotlib.pyplot")
    for name in hidden:
        sys.modules[name] = None  # an import of it raises ImportError
    try:
        module = importlib.import_module("keras")
    finally:
        for name in hidden:
            del sys.modules[name]
    gallery = sys.modules.get("keras.src.visualization.plot_image_gallery")
    if gallery is not None and getattr(gallery, "plt", None) is None:
        gallery.plt = _DeferredModule("matplotlib.pyplot")
    return module


keras3 = _import_keras3()  # Keras 3, whatever TF_USE_LEGACY_KERAS says; its backend: KERAS_BACKEND

__all__ = ["tf", "keras", "keras3"]
