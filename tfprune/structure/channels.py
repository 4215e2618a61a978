"""Element-wise activations: which activation functions compute each unit from that unit alone (so a unit's
output depends on its own pre-activation only). Which layers pass channels through, and how, is the table of
``tfprune.select.channel_rules``."""

# Activations computed element by element (so a unit's output depends on that unit only).
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "gelu", "tanh", "sigmoid", "hard_sigmoid", "swish", "silu",
    "softplus", "softsign", "exponential", "leaky_relu", "mish", "hard_silu", "hard_swish"})


def activation_name(layer):
    """The name of a layer's activation function (``"relu"``), or None when it has none."""
    return getattr(getattr(layer, "activation", None), "__name__", None)


def is_elementwise(layer):
    """True when the layer's activation is computed element by element (its units are independent)."""
    return activation_name(layer) in ELEMENTWISE_ACTIVATIONS


__all__ = ["ELEMENTWISE_ACTIVATIONS", "activation_name", "is_elementwise"]
