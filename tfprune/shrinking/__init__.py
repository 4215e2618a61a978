"""Making pruned models physically smaller: ``surgery`` (``shrink``: dead units and channels cut out of the weight
matrices, outputs unchanged), ``group_shrink`` (what a pruned channel group lets it remove) and ``costs``
(parameters and MACs before and after)."""
