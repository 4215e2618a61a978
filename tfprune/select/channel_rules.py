"""The channel pass-through rules: for every Keras layer type without units of its own, how the channels of its
output relate to those of its input, and how its own per-channel weights and config follow when channels go.

A **channel** is one position of a tensor's last axis (channels-last). This is the one table that grouping
(``tfprune.select.coupling``: which channels are removed together), group pruning (``tfprune.select.group_pruning``) and
shrinking (``tfprune.shrinking.surgery``) read; the layers with units of their own (Dense, convolutions, recurrent
layers...) are the registry's (``tfprune.layers.registry``). A rule's ``kind``:

- ``one_to_one``: output channel c is input channel c and depends on it alone (element-wise activations, dropout and
  noise, pooling, padding, cropping, upsampling, BatchNormalization over the last axis, PReLU, a user's channel-wise
  layer). The only kind shrinking follows a dead unit's constant output through.
- ``depthwise``: input channel c makes the outputs c·m … c·m+m−1 (DepthwiseConv2D, depth multiplier m); its kernel
  ``[..., c, :]`` and bias entries c·m + j go with c (group pruning masks them: the layer is prunable).
- ``flatten``: channel c of C becomes every position s·C + c of the output (a channels-last Flatten; s < blocks).
- ``reshape``: a Reshape that keeps the last axis: channel c stays c; its target shape names the channel count.
- ``grouped``: channel c stays c, but the channels form consecutive groups that share statistics
  (GroupNormalization): coupling ties each group's channels into one removable unit, so only whole groups go and
  the layer's group count drops; the other groups' outputs are unchanged.
- ``concatenate``: the inputs' channels side by side (Concatenate on the last axis).
- ``merge``: the inputs share each channel (Add, Subtract, Multiply, Average, Maximum, Minimum).

A layer of a known type can still be refused (``applies``): a softmax Activation, a BatchNormalization over another
axis, channels-first data. A user registers a rule for a layer class of their own with ``register_channel_rule``.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

from tfprune.structure import graph
from tfprune.structure.channels import activation_name, is_elementwise
from tfprune.layers.layouts import DepthwiseLayout
from tfprune._env import keras, keras3

L, L3 = keras.layers, keras3.layers

ONE_TO_ONE, DEPTHWISE, FLATTEN, RESHAPE, GROUPED, CONCATENATE, MERGE = (
    "one_to_one", "depthwise", "flatten", "reshape", "grouped", "concatenate", "merge")
KINDS = (ONE_TO_ONE, DEPTHWISE, FLATTEN, RESHAPE, GROUPED, CONCATENATE, MERGE)
USER_KINDS = (ONE_TO_ONE, GROUPED, MERGE)  # the kinds that need no more than the rule's callables


def _always(layer):  # pylint: disable=unused-argument
    return None


def _channels(layer):
    return int(graph.input_shape(layer)[-1])


def per_channel(layer, weights, keep):
    """``weights`` with only the input channels ``keep`` along the last axis of each weight that has one entry per
    channel there (BatchNormalization's four vectors, PReLU's alpha); other weights (an alpha shared over the
    channels, shape (..., 1)) unchanged."""
    channels = _channels(layer)
    return [np.take(w, keep, axis=-1) if np.ndim(w) and np.shape(w)[-1] == channels else w for w in weights]


@dataclasses.dataclass(frozen=True)
class ChannelRule:
    """How one layer type passes channels from its input to its output (see the module docstring).

    kind: one of ``KINDS``; a user's rule one of ``USER_KINDS`` (``one_to_one``, ``grouped``, ``merge``).
    applies: layer -> None when this instance passes channels as ``kind`` says, else the reason it does not (then
      the layer blocks the channels it reads, as a layer without a rule does).
    slice_weights: (layer, weights, keep) -> the weights of the layer with only the input channels ``keep``:
      ``weights`` are NumPy arrays in ``get_weights()`` order, ``keep`` a sorted int array of channel indices; the
      default (``per_channel``) slices every weight whose last axis has one entry per input channel.
    configure: (layer, config, keep) -> the config of that narrower layer, for a layer whose config names the channel
      count (Reshape's target shape, GroupNormalization's groups); None: the config is unchanged.
    group_size: ``grouped`` only: layer -> channels per group (channels ``g·size … g·size + size − 1`` share
      statistics and go together).

    Raises:
      ValueError: an unknown ``kind``; a ``grouped`` rule without ``group_size``.
    """
    kind: str = ONE_TO_ONE
    applies: Callable = _always
    slice_weights: Callable = per_channel
    configure: Optional[Callable] = None
    group_size: Optional[Callable] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"channel rule kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == GROUPED and self.group_size is None:
            raise ValueError("a 'grouped' channel rule needs group_size (layer -> channels per group)")

    @property
    def joins(self):
        """True for the kinds that join several inputs (``concatenate``, ``merge``)."""
        return self.kind in (CONCATENATE, MERGE)

    @property
    def walkable(self):
        """True when shrinking may follow a dead unit's constant output through the layer (channel c of the output
        depends on channel c of the input alone)."""
        return self.kind == ONE_TO_ONE

    @property
    def masked(self):
        """True when the layer's weights of a channel are masked by group pruning (a prunable DepthwiseConv2D);
        otherwise its per-channel weights are only sliced by ``shrink``."""
        return self.kind == DEPTHWISE

    def follows(self, layer):
        """Whether ``layer`` is a **follower** of the channels it passes: it has per-channel weights, its config names
        the channel count, or it ties channels together."""
        return not self.joins and (bool(layer.weights) or self.configure is not None or self.kind == GROUPED)

    def map_ids(self, layer, inputs):
        """The output's channel node ids (int array) from those of the inputs (a list of int arrays)."""
        if self.kind == DEPTHWISE:
            return np.repeat(inputs[0], int(layer.depth_multiplier))
        if self.kind == FLATTEN:
            return np.tile(inputs[0], flatten_blocks(layer))
        if self.kind == CONCATENATE:
            return np.concatenate(inputs)
        return inputs[0]

    def tied(self, layer):
        """Arrays of input channels that can only be removed together (a ``grouped`` layer's groups; [] otherwise)."""
        if self.kind != GROUPED:
            return []
        size = int(self.group_size(layer))
        return [np.arange(start, start + size) for start in range(0, _channels(layer), size)] if size > 1 else []

    def sliced(self, layer, keep):
        """The layer's weights (NumPy) with only the input channels ``keep``.

        Raises:
          ValueError: ``keep`` cuts through a group of a ``grouped`` layer.
        """
        keep = np.asarray(keep, np.int64)
        for group in self.tied(layer):
            if 0 < np.isin(group, keep).sum() < len(group):
                raise ValueError(f"{layer.name} ({type(layer).__name__}) can only lose whole groups of {len(group)} "
                                 f"channels; channels {group.tolist()} are cut through")
        return self.slice_weights(layer, [np.asarray(w) for w in layer.get_weights()], keep)

    def config(self, layer, keep):
        """The config of ``layer`` with only the input channels ``keep``."""
        config = layer.get_config()
        return config if self.configure is None else self.configure(layer, config, np.asarray(keep, np.int64))


# ---------------------------------------------------------------------------------------------------- the table

def _channels_last(layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "has channels-first data"
    return None


def _normalizes_last_axis(layer):
    rank = len(graph.input_shape(layer))
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    return None if [a % rank for a in axes] == [rank - 1] else f"normalizes over axis {layer.axis}, not the channels"


def _elementwise(layer):
    return None if is_elementwise(layer) else f"computes {activation_name(layer)!r}, which mixes the channels"


def _concatenates_last_axis(layer):
    rank = len(graph.input_shape(layer))
    return None if layer.axis in (-1, rank - 1) else f"concatenates along axis {layer.axis}, not the channels"


def _keeps_last_axis(layer):
    target, shape = [int(d) for d in layer.target_shape], graph.input_shape(layer)[1:]
    width = target[-1]
    if width == -1 and None not in shape:  # the last axis is inferred
        width = int(np.prod(shape, dtype=np.int64)) // max(1, int(np.prod(target[:-1], dtype=np.int64)))
    return None if width == _channels(layer) else "does not keep the channel axis"


def flatten_blocks(layer):
    """How many blocks of its input's channels a channels-last Flatten's output holds (H · W ...)."""
    return int(np.prod(graph.input_shape(layer)[1:-1], dtype=np.int64))


def _depthwise_slice(layer, weights, keep):  # pylint: disable=unused-argument
    return DepthwiseLayout().slice(weights, keep)


def _reshape_config(layer, config, keep):  # pylint: disable=unused-argument
    config["target_shape"] = tuple(config["target_shape"][:-1]) + (len(keep),)
    return config


def _group_size(layer):
    """Channels per group of a GroupNormalization (``groups=-1``: one group per channel)."""
    return 1 if layer.groups == -1 else _channels(layer) // int(layer.groups)


def _group_norm_config(layer, config, keep):
    if config["groups"] != -1:
        config["groups"] = len(keep) // _group_size(layer)
    return config


def _group_norm_applies(layer):
    return _normalizes_last_axis(layer) or _channels_last(layer)


# Layers that map channel c to channel c alone at inference (in both stacks; Keras 3 dropped ThresholdedReLU).
_ONE_TO_ONE_NAMES = (
    "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "PReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "SpatialDropout3D", "GaussianDropout", "GaussianNoise", "AlphaDropout") + tuple(
    f"{kind}{rank}D" for rank in (1, 2, 3) for kind in (
        "MaxPooling", "AveragePooling", "GlobalMaxPooling", "GlobalAveragePooling", "ZeroPadding", "Cropping",
        "UpSampling"))
_MERGE_NAMES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_BY_NAME = {
    **{name: ChannelRule(ONE_TO_ONE, _channels_last) for name in _ONE_TO_ONE_NAMES},
    **{name: ChannelRule(MERGE) for name in _MERGE_NAMES},
    "Activation": ChannelRule(ONE_TO_ONE, _elementwise),
    "BatchNormalization": ChannelRule(ONE_TO_ONE, _normalizes_last_axis),
    "GroupNormalization": ChannelRule(GROUPED, _group_norm_applies, configure=_group_norm_config,
                                      group_size=_group_size),
    "DepthwiseConv2D": ChannelRule(DEPTHWISE, _channels_last, _depthwise_slice),
    "Flatten": ChannelRule(FLATTEN, _channels_last),
    "Reshape": ChannelRule(RESHAPE, _keeps_last_axis, configure=_reshape_config),
    "Concatenate": ChannelRule(CONCATENATE, _concatenates_last_axis),
}
RULES = {getattr(module, name): rule for module in (L, L3) for name, rule in _BY_NAME.items()
         if hasattr(module, name)}
# Known layers that mix the channels they read, with the reason (coupling names it).
_MIXING = {getattr(module, "LayerNormalization"): "normalizes across the channels" for module in (L, L3)}
_USER_RULES = {}


def _is_keras(cls):
    return cls.__module__.startswith(("tf_keras.", "keras."))


def register_channel_rule(layer_class, rule=None):
    """Tells tfprune how a layer class of the user's passes channels through, so that coupling groups the channels
    across it, group pruning prunes them and ``shrink`` removes them, slicing the layer's own weights.

    Usable as a decorator (``@tfprune.register_channel_rule``) with the default rule. Registering a class again
    replaces its rule; subclasses inherit it (the nearest class of the MRO with a rule wins).

    Args:
      layer_class: a Keras layer class (tf_keras or Keras 3) without units of its own, mapping channels-last
        inputs ``(batch, ..., C)`` to outputs whose last axis is the same ``C`` channels.
      rule: a ``ChannelRule`` of a kind in ``USER_KINDS``; None: ``ChannelRule()``, one to one, every weight
        whose last axis has ``C`` entries (e.g. a learned scale of shape ``(C,)``) sliced along it.

    Returns:
      ``layer_class``.

    Raises:
      TypeError: ``layer_class`` is not a Keras layer class, or ``rule`` not a ``ChannelRule``.
      ValueError: the rule's kind is not in ``USER_KINDS``; the class is a Keras layer type tfprune has a rule
        for, or a layer with units tfprune prunes (it opts in with ``get_prunable_weights``).
    """
    rule = ChannelRule() if rule is None else rule
    if not (isinstance(layer_class, type) and issubclass(layer_class, (L.Layer, L3.Layer))):
        raise TypeError(f"register_channel_rule takes a Keras layer class; got {layer_class!r}")
    if not isinstance(rule, ChannelRule):
        raise TypeError(f"register_channel_rule takes a tfprune ChannelRule; got {type(rule).__name__}")
    if rule.kind not in USER_KINDS:
        raise ValueError(f"a user's channel rule is one of {', '.join(USER_KINDS)}; got {rule.kind!r}")
    if _is_keras(layer_class):
        raise ValueError(f"{layer_class.__name__} is a Keras layer type: tfprune's own table decides its channels")
    if callable(getattr(layer_class, "get_prunable_weights", None)):
        raise ValueError(f"{layer_class.__name__} opts in to pruning (get_prunable_weights): its units are its own, "
                         "a channel rule is for layers passing channels through")
    _USER_RULES[layer_class] = rule
    return layer_class


def rule_for(layer):
    """The ``ChannelRule`` of ``layer``'s class (the nearest class of its MRO with one), or None."""
    for cls in type(layer).__mro__:
        rule = _USER_RULES.get(cls) or RULES.get(cls)
        if rule is not None:
            return rule
    return None


def passes(layer, inputs=1):
    """(rule, None) when ``layer``, called on ``inputs`` tensors, passes channels by a rule that applies to it, else
    (None, the reason it does not: a verb phrase, e.g. "normalizes across the channels")."""
    joins = "joins several inputs in a way tfprune does not map"
    rule = rule_for(layer)
    if rule is not None:
        why = rule.applies(layer) or (None if rule.joins == (inputs > 1) else joins)
        return (rule, None) if why is None else (None, why)
    for cls, why in _MIXING.items():
        if isinstance(layer, cls):
            return None, why
    return None, (joins if inputs > 1 else "reads them in a way tfprune does not map") + hint(layer)


def hint(layer):
    """How a user's layer gets a rule ('' for Keras' own layers)."""
    cls = type(layer)
    return "" if _is_keras(cls) else f" (register a rule: tfprune.register_channel_rule({cls.__name__}, rule))"


__all__ = ["CONCATENATE", "ChannelRule", "DEPTHWISE", "FLATTEN", "GROUPED", "KINDS", "MERGE", "ONE_TO_ONE", "RESHAPE",
           "RULES", "USER_KINDS", "flatten_blocks", "hint", "passes", "per_channel", "register_channel_rule",
           "rule_for"]
