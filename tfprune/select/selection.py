"""Which layers (or channel groups) a pruning call selects, from its ``layers`` argument."""


def select_layers(model, layers, value):
    """{layer name: value} of a ``layers`` argument: a list of names (each mapped to ``value``) or a dict name ->
    its own value (copied).

    Raises:
      ValueError: ``layers`` neither a list nor a dict, a name listed twice, or selecting nothing.
    """
    if isinstance(layers, dict):
        plan = dict(layers)
    elif isinstance(layers, (list, tuple)):
        twice = sorted({n for n in layers if list(layers).count(n) > 1})
        if twice:
            raise ValueError(f"layer(s) {', '.join(map(repr, twice))} named more than once in layers={list(layers)}")
        plan = {n: value for n in layers}
    else:
        raise ValueError(f"layers {layers!r} must be None, a list of layer names or a dict name -> sparsity")
    if not plan:
        raise ValueError(f"no layer selected to prune in model {model.name!r} (layers={layers!r})")
    return plan


__all__ = ["select_layers"]
