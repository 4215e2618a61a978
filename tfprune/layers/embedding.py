"""The Embedding family, both stacks: ``PrunableEmbedding``, whose table (vocabulary, output_dim) is masked; its units
are the embedding dimensions (columns). Dense ids only (``sparse=True`` stays dense). Masks are held in the variables
(``tfprune.layers.stored_masks``; Keras 3: the ``embeddings`` property, LoRA included, masked on JAX outside
``jax_masks``' train step).
"""

from tfprune.layers.kinds import LayerKind, both_stacks, no_macs
from tfprune.layers.stored_masks import Keras3KernelBias, TfKerasKernelBias, prunable_classes

_CLASSES = prunable_classes(
    (TfKerasKernelBias, Keras3KernelBias), ("Embedding",), "table (vocabulary, output_dim)", __name__,
    {"Embedding": ({"_KERNEL": "embeddings", "_KERNEL_CONSTRAINT": "embeddings_constraint"},
                   {"_KERNEL": "embeddings", "_STORED": "_embeddings"})})
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]


def _embedding_support(layer):
    if getattr(layer, "sparse", False):
        return "Embedding with sparse=True (sparse lookups)"
    return None


ORDER = 30  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(layers.Embedding, _CLASSES[stack]["Embedding"], "output_dim", unsupported=_embedding_support,
              macs=no_macs, kernel_attr="embeddings", inputs_axis=True)])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS"]
