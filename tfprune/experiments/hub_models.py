"""KerasHub classifiers built from configs (no weights downloaded; Keras 3): a ViT on images, a BERT- or Gemma-style
encoder on token sequences, each a backbone with a classifier head, as a user builds them.

``keras_hub`` is imported on first use, so the rest of tfprune runs without it.
"""

import numpy as np

from tfprune._env import keras3


def _hub():
    import keras_hub  # pylint: disable=import-outside-toplevel (optional, heavy)
    return keras_hub


def vit_backbone(image_shape=(28, 28, 1), patch_size=7, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128):
    """A ``keras_hub.models.ViTBackbone`` from its config (random weights): sequence output (B, patches + 1, hidden)."""
    return _hub().models.ViTBackbone(image_shape=tuple(image_shape), patch_size=patch_size, num_layers=num_layers,
                                     num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim)


def token_backbone(family, vocabulary_size, sequence_length, num_layers=2, num_heads=4, hidden_dim=64,
                   intermediate_dim=128):
    """A ``BertBackbone`` or ``GemmaBackbone`` (``family``: ``"bert"``, ``"gemma"``) from its config.

    Raises:
      ValueError: another family.
    """
    models = _hub().models
    if family == "bert":
        return models.BertBackbone(vocabulary_size=vocabulary_size, num_layers=num_layers, num_heads=num_heads,
                                   hidden_dim=hidden_dim, intermediate_dim=intermediate_dim,
                                   max_sequence_length=sequence_length)
    if family == "gemma":
        return models.GemmaBackbone(vocabulary_size=vocabulary_size, num_layers=num_layers, num_query_heads=num_heads,
                                    num_key_value_heads=num_heads, hidden_dim=hidden_dim,
                                    intermediate_dim=intermediate_dim, head_dim=hidden_dim // num_heads)
    raise ValueError(f"unknown backbone family {family!r}; choices: bert, gemma")


def classifier(backbone, classes, sequence_length=None, name=None):
    """A functional classifier on one input: the backbone (its blocks as they are), its pooled output (BERT) or the
    mean over its sequence output, and a softmax Dense ``logits`` of ``classes``. A token backbone gets its other inputs
    (segment ids, padding mask) from the token ids inside the model (zeros, ones), so the model and its TFLite
    file take the token ids (B, ``sequence_length``) int32 alone; an image backbone takes its images.
    """
    L = keras3.layers
    inputs = backbone.input
    if isinstance(inputs, dict):
        tokens = keras3.Input((sequence_length,), dtype="int32", name="token_ids")
        feeds = {"token_ids": tokens, "padding_mask": keras3.ops.ones_like(tokens)}
        if "segment_ids" in inputs:
            feeds["segment_ids"] = keras3.ops.zeros_like(tokens)
        features, model_input = backbone(feeds), tokens
    else:
        model_input = keras3.Input(tuple(inputs.shape[1:]), name="images")
        features = backbone(model_input)
    if isinstance(features, dict) and "pooled_output" in features:  # BERT's [CLS] through its pooled dense
        pooled = features["pooled_output"]
    else:
        sequence = features["sequence_output"] if isinstance(features, dict) else features
        pooled = L.GlobalAveragePooling1D(name="mean")(sequence)
    out = L.Dense(classes, activation="softmax", name="logits")(pooled)
    return keras3.Model(model_input, out, name=name or f"{backbone.name}_classifier")


def image_tokens(x, grid=7, levels=16):
    """Images (N, H, W[, 1]) in [0, 1] as token sequences (N, grid²) int32: the mean of each cell of a grid×grid
    partition, in ``levels`` grey levels (a real sequence task made of Fashion-MNIST, row by row)."""
    x = np.asarray(x, np.float32).reshape(len(x), x.shape[1], x.shape[2])
    cell_h, cell_w = x.shape[1] // grid, x.shape[2] // grid
    means = x[:, :grid * cell_h, :grid * cell_w].reshape(len(x), grid, cell_h, grid, cell_w).mean(axis=(2, 4))
    return np.minimum((means * levels).astype(np.int32), levels - 1).reshape(len(x), grid * grid)


__all__ = ["classifier", "image_tokens", "token_backbone", "vit_backbone"]
