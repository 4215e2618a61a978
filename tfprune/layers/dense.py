"""The Dense family, both stacks: ``PrunableDense`` (kernel (in, units), bias (units,)) for tf_keras and Keras 3.

Both hold their masks in the variables (``tfprune.layers.stored_masks``): the parent's ``call`` runs unchanged. In
tf_keras the parent's build gets masking constraints; in Keras 3 the ``kernel`` property (LoRA included) returns the
masked tensor on JAX outside ``jax_masks``' train step. A Dense's units are its output columns; after a Flatten its
inputs are a flattened feature map (``flat_input``).
"""

from tfprune.layers.kinds import LayerKind, both_stacks
from tfprune.layers.stored_masks import Keras3KernelBias, TfKerasKernelBias, prunable_classes

_CLASSES = prunable_classes((TfKerasKernelBias, Keras3KernelBias), ("Dense",), "kernel (in, units) and bias (units,)",
                            __name__)
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]

ORDER = 10  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(layers.Dense, _CLASSES[stack]["Dense"], "units", flat_input=True, inputs_axis=True)])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS"]
