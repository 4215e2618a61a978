"""A shrunk model rebuilt from its blocks' own configs: the smaller KerasHub backbone as ``BertBackbone(...,
intermediate_dim=64)`` would build it, so that it saves as a ``.keras`` file and loads back.

``shrink`` cuts the layers inside a block in place (``tfprune.shrinking.blocks``); the block's config still gives
the old sizes, so Keras, loading the model, would rebuild the old block. ``rebuild_from_config`` finds, for each
block whose weights no longer match a build from its config, the config entries that give the new shapes: each
integer entry is tried scaled by the ratio of a changed dimension (128 -> 64 units: ``intermediate_dim`` 256 ->
128), kept when it makes more weights match and none stop matching, and the block built from all the kept entries
must match every weight. The blocks' weights are then copied over and the model's outputs proven equal on a probe
batch. Cuts a config cannot express (BERT's and ViT's heads: their blocks set each head's width to
``hidden_dim // num_heads``; blocks cut unevenly) raise the error naming the weights.
"""

from tfprune.layers import nested, registry
from tfprune.shrinking import blocks
from tfprune.structure import graph


def _shapes(layer):
    return [tuple(int(d) for d in w.shape) for w in layer.weights]


def _matches(built, target):
    return [a == b for a, b in zip(built, target)] if len(built) == len(target) else [False] * len(target)


def _scalings(config, fresh, target):
    """(key, value): an integer config entry scaled by new/old of a dimension that differs between the weights of
    a build from ``config`` (``fresh``) and ``target``, where that gives another integer."""
    pairs = sorted({(a, b) for f, t in zip(fresh, target) if len(f) == len(t) for a, b in zip(f, t) if a != b})
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int):
            continue
        for old, new in pairs:
            if value * new % old == 0 and value * new // old != value:
                yield key, value * new // old


def _build(layer, config):
    try:
        return type(layer).from_config(config)
    except Exception:  # pylint: disable=broad-except (a config this block refuses: not a candidate)
        return None


def _rebuilt_block(layer):
    """``layer`` (a block) built from its config with the entries that give its present weight shapes, holding its
    weights; None when its config already builds them.

    Raises:
      ValueError: no such config (the first weight whose shape it cannot give named).
    """
    target, config = _shapes(layer), layer.get_config()
    fresh = _build(layer, config)
    if fresh is None:
        raise ValueError(f"block {layer.name!r} ({type(layer).__name__}) cannot be built from its own config")
    if _shapes(fresh) == target:
        return None
    best, chosen = _matches(_shapes(fresh), target), {}
    for key, value in _scalings(config, _shapes(fresh), target):
        candidate = None if key in chosen else _build(layer, {**config, key: value})
        matched = None if candidate is None else _matches(_shapes(candidate), target)
        if matched is not None and all(m or not b for m, b in zip(matched, best)) and sum(matched) > sum(best):
            best, chosen[key] = [m or b for m, b in zip(matched, best)], value
    rebuilt = _build(layer, {**config, **chosen})
    shapes = _shapes(rebuilt) if rebuilt is not None else []
    if shapes != target:
        wrong = next((i for i, m in enumerate(_matches(shapes, target)) if not m), 0)
        got = shapes[wrong] if wrong < len(shapes) else None
        weight = getattr(layer.weights[wrong], "path", None) or layer.weights[wrong].name
        raise ValueError(
            f"no config of {type(layer).__name__} {layer.name!r} gives its shrunk weights: {weight} "
            f"is {target[wrong]}, its config {'with ' + str(chosen) if chosen else 'as it is'} builds {got} (heads "
            "whose width the block derives from the hidden width, or blocks cut unevenly, have no config)")
    rebuilt.set_weights(layer.get_weights())
    return rebuilt


def rebuild_from_config(model):
    """Graph ``model`` (plain, shrunk by ``tfprune.shrink``) with every block cut inside rebuilt from its own config
    with the smaller sizes (module docstring): a model that ``model.save("m.keras")`` saves and ``load_model`` loads
    back with the same outputs. Other layers are rebuilt from their configs and keep their weights.

    Returns:
      The new model (``model`` itself when no block needs it); its outputs equal ``model``'s to
      ``blocks.TOLERANCE`` on a probe batch.

    Raises:
      ValueError: ``model`` holds prunable layers (strip it first), or a block's cuts have no config (the error
      names the block and the weight).
    """
    graph.check_graph_model(model, "rebuilds")
    prunable = [l.name for l in registry.model_layers(model) if registry.is_prunable(l)]
    if prunable:
        raise ValueError(f"model {model.name!r} holds prunable layers ({', '.join(prunable[:3])}): shrink or strip it "
                         "before rebuild_from_config")
    rebuilt = {}
    for layer in model.layers:
        if nested.is_block(layer) or graph.is_block(layer):
            block = _rebuilt_block(layer)
            if block is not None:
                rebuilt[layer.name] = block
    if not rebuilt:
        return model
    new_model = graph.clone(model, lambda l: rebuilt.get(l.name) or type(l).from_config(l.get_config()))
    graph.copy_weights(model, new_model, lambda old, new: None if old.name in rebuilt else new.set_weights(
        old.get_weights()))
    batch = blocks.probe_batch(model)
    if not blocks.same_outputs(blocks.outputs_on(model, batch), blocks.outputs_on(new_model, batch)):
        raise ValueError(f"model {model.name!r} rebuilt from its configs ({', '.join(rebuilt)}) gives other outputs")
    return new_model


__all__ = ["rebuild_from_config"]
