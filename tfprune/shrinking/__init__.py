"""Making pruned models physically smaller: ``surgery`` (``shrink``: dead units and the unread channels of pruned
channel groups cut out of the weight matrices, outputs unchanged; every layer sliced by the registry and the channel
rules) and ``costs`` (parameters and MACs before and after)."""
