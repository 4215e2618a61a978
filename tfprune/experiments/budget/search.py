"""Search to a device budget, the pure part: the budget, the candidate families, the k ladder, which candidate fits
and wins, and the walk along the ladder (no Keras, no files: ``fit_budget`` drives it with measured probes).

A **probe** prunes the trained model by one family's method at one percent k, fine-tunes it and exports it in the
family's TFLite variants; each exported file is a **candidate** (``frontier.Candidate``), measured in LiteRT. The
search walks each family's ladder of k from a predicted start (NetAdapt-style: the prediction only picks where to
start, every decision is taken on the measured file): with a size or latency budget it looks for the smallest k
whose files fit (the least pruning, so the most accuracy left); with an accuracy floor alone, for the largest k
whose files keep it (the smallest file).
"""

import dataclasses
import math
from typing import Optional

from tfprune.experiments.config import ConfigError, check_unique

# Family -> (pruning method, TFLite variants its probes export). Unit pruning ships the physically shrunk model
# (fine-tuned again after shrinking, cheaply: it is small); weight and block pruning ship sparse encodings that
# LiteRT's kernels use (block 1x4 float and 1x16 int8/dynamic) or, unstructured, the smallest file that runs in both
# LiteRT APIs (float16+sparse).
FAMILIES = {
    "unit": ("unit", ("float", "dynamic", "int8")),
    "block_1x16": ("block_1x16", ("int8+sparse", "dynamic+sparse")),
    "block_1x4": ("block_1x4", ("float+sparse",)),
    "weight": ("weight", ("float16+sparse",)),
    "unit_refit": ("unit_refit", ("float", "dynamic", "int8")),  # calibration methods (``--calibration_size``)
    "sparsegpt": ("sparsegpt", ("float16+sparse",)),
    "wanda": ("wanda", ("float16+sparse",)),
}
DEFAULT_FAMILIES = ("unit", "block_1x16", "block_1x4", "weight")
DENSE_VARIANTS = ("float", "dynamic", "int8")  # the k = 0 probe: the references and the predictions' scale
LADDER = (50.0, 70.0, 80.0, 85.0, 90.0, 92.0, 94.0, 95.0, 96.0, 97.0, 98.0, 99.0)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What the shipped file must meet: ``max_size_kib`` (TFLite file, KiB), ``max_latency_ms`` (LiteRT median
    single-image latency at the search's thread count), ``min_accuracy`` (percent, LiteRT on the test images). At
    least one; None = no limit.

    Raises:
      ConfigError: no limit at all, or a limit that is not a finite number > 0 (accuracy in (0, 100]).
    """
    max_size_kib: Optional[float] = None
    max_latency_ms: Optional[float] = None
    min_accuracy: Optional[float] = None

    def __post_init__(self):
        if self.max_size_kib is None and self.max_latency_ms is None and self.min_accuracy is None:
            raise ConfigError("no budget given: set --max_size_kib, --max_latency_ms and/or --min_accuracy")
        for name in ("max_size_kib", "max_latency_ms", "min_accuracy"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} {value!r} must be a finite number > 0")
        if self.min_accuracy is not None and self.min_accuracy > 100:
            raise ConfigError(f"min_accuracy {self.min_accuracy!r} is a percent: at most 100")

    @property
    def has_cost(self):
        """True when a size or latency limit is set: the search maximises accuracy under it."""
        return self.max_size_kib is not None or self.max_latency_ms is not None

    def fits_cost(self, candidate):
        return ((self.max_size_kib is None or candidate.size_bytes <= self.max_size_kib * 1024)
                and (self.max_latency_ms is None or candidate.latency_ms <= self.max_latency_ms))

    def fits_accuracy(self, candidate):
        return self.min_accuracy is None or 100 * candidate.accuracy >= self.min_accuracy

    def fits(self, candidate):
        return self.fits_cost(candidate) and self.fits_accuracy(candidate)

    def shortfall(self, candidate):
        """How far ``candidate`` is from fitting, the worst limit as a fraction of it (0 = fits)."""
        misses = [0.0]
        if self.max_size_kib is not None:
            misses.append(candidate.size_bytes / (self.max_size_kib * 1024) - 1)
        if self.max_latency_ms is not None:
            misses.append(candidate.latency_ms / self.max_latency_ms - 1)
        if self.min_accuracy is not None:
            misses.append((self.min_accuracy - 100 * candidate.accuracy) / self.min_accuracy)
        return max(misses)

    def describe(self, num_threads=1):
        parts = []
        if self.max_size_kib is not None:
            parts.append(f"file <= {self.max_size_kib:g} KiB")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms at {num_threads} thread(s)")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:g} %")
        return ", ".join(parts)


def check_families(families):
    """The families as a tuple, checked.

    Raises:
      ConfigError: empty, repeated or unknown names (the message lists the known ones).
    """
    families = tuple(check_unique(families, "--families", noun="family"))
    bad = [f for f in families if f not in FAMILIES]
    if not families or bad:
        raise ConfigError(f"--families: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'empty'}; give one or "
                          f"more of {', '.join(FAMILIES)}")
    return families


def better(a, b, budget):
    """True when candidate ``a`` is a better choice than ``b``: more accurate under a cost budget (then smaller,
    then faster); smaller under an accuracy floor alone (then faster, then more accurate)."""
    if budget.has_cost:
        key = lambda c: (round(c.accuracy, 6), -c.size_bytes, -c.latency_ms)  # noqa: E731
    else:
        key = lambda c: (-c.size_bytes, -c.latency_ms, round(c.accuracy, 6))  # noqa: E731
    return key(a) > key(b)


def choose(candidates, budget):
    """The best candidate that fits ``budget`` (``better``), or None."""
    best = None
    for c in candidates:
        if budget.fits(c) and (best is None or better(c, best, budget)):
            best = c
    return best


def closest(candidates, budget):
    """The candidate nearest to fitting (smallest ``Budget.shortfall``), or None."""
    return min(candidates, key=budget.shortfall, default=None)


def probe_ok(candidates, budget):
    """Whether a probe's files move the walk on: under a cost budget, some file fits the cost; under an accuracy
    floor alone, some file keeps the accuracy."""
    if budget.has_cost:
        return any(budget.fits_cost(c) for c in candidates)
    return any(budget.fits_accuracy(c) for c in candidates)


def start_index(predicted_ok, ladder=LADDER):
    """Where a family's walk starts: the first ladder index whose prediction says ok (``predicted_ok(k)``), else the
    last one; under an accuracy floor pass ``None`` and the walk starts at the ladder's middle (90 %)."""
    if predicted_ok is None:
        return min(range(len(ladder)), key=lambda i: abs(ladder[i] - 90.0))
    for i, k in enumerate(ladder):
        if predicted_ok(k):
            return i
    return len(ladder) - 1


def walk(probe, start, prefer_lower, ladder=LADDER):
    """Walks the ladder from index ``start`` to the boundary between ok and not-ok k's and returns {k: ok}.

    ``probe(k) -> bool`` runs (or reads back) one probe. With ``prefer_lower`` (a cost budget: ok = fits, and a
    larger k fits more easily) an ok k steps down the ladder and a failed one up, until a step would cross a k
    already seen or leave the ladder; without it (an accuracy floor: ok = accurate enough) the directions swap.
    """
    seen = {}
    i = start
    while True:
        ok = probe(ladder[i])
        seen[ladder[i]] = ok
        step = -1 if ok == prefer_lower else 1
        j = i + step
        if not 0 <= j < len(ladder) or ladder[j] in seen:
            return seen
        i = j


__all__ = ["Budget", "DEFAULT_FAMILIES", "DENSE_VARIANTS", "FAMILIES", "LADDER", "better", "check_families",
           "choose", "closest", "probe_ok", "start_index", "walk"]
