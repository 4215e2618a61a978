"""Which model to ship under a device budget: ``search`` (the pure part: the budget, the candidate families, the k
ladder, which candidate fits and wins), ``fit`` (``run_fit_budget``: the search driven by measured probes),
``export`` (what a probe exports) and ``frontier`` (accuracy/size and accuracy/latency Pareto frontiers over every
exported file)."""
