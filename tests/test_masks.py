"""tfprune.select.masks: exact counts, ties, the kept entries are the largest ones (checked against a full sort)."""

import numpy as np
from absl.testing import parameterized

from tfprune.select import masks


def reference_pruned(scores, count):
    """Straightforward reference: stable sort by score (ties by flat index), prune the first ``count``."""
    order = np.argsort(np.asarray(scores, np.float64).ravel(), kind="stable")
    pruned = np.zeros(np.size(scores), bool)
    pruned[order[:count]] = True
    return pruned


SHAPES = (("dense", (64, 32)), ("conv", (3, 3, 8, 16)), ("vector", (1, 7)))
SPARSITIES = (0.0, 0.25, 0.5, 0.9, 0.97, 0.999)


class WeightMaskTest(parameterized.TestCase):

    @parameterized.product(shape=[s for _, s in SHAPES], sparsity=SPARSITIES, ties=[False, True])
    def test_exact_count_and_largest_kept(self, shape, sparsity, ties):
        rng = np.random.default_rng(0)
        kernel = rng.normal(size=shape).astype(np.float32)
        if ties:  # many exact ties: half the weights zero, the rest from 3 magnitudes with both signs
            kernel = rng.choice([0, 0, 0.5, -0.5, 1.0, -2.0], size=shape).astype(np.float32)
        keep = masks.weight_mask(kernel, sparsity)
        n_pruned = int(np.floor(sparsity * kernel.size + 0.5))
        self.assertEqual(keep.shape, kernel.shape)
        self.assertEqual(keep.dtype, bool)
        self.assertEqual(int((~keep).sum()), n_pruned)
        np.testing.assert_array_equal(~keep.ravel(), reference_pruned(np.abs(kernel), n_pruned))
        if n_pruned and (~keep).sum() < keep.size:
            self.assertLessEqual(np.abs(kernel[~keep]).max(), np.abs(kernel[keep]).min())

    def test_current_mask_entries_stay_pruned(self):
        rng = np.random.default_rng(1)
        kernel = rng.normal(size=(20, 10))
        first = masks.weight_mask(kernel, 0.5)
        kernel2 = kernel * first + rng.normal(size=kernel.shape) * 0.01 * ~first  # pruned weights drift slightly
        second = masks.weight_mask(kernel2, 0.7, current=first)
        self.assertFalse(np.any(second & ~first))
        self.assertEqual(int((~second).sum()), 140)

    def test_half_rounds_up(self):
        self.assertEqual(masks.prune_count(0.5, 3), 2)
        self.assertEqual(masks.prune_count(0.25, 10), 3)
        self.assertEqual(masks.prune_count(0.24, 10), 2)


class UnitMaskTest(parameterized.TestCase):

    @parameterized.product(shape=[s for _, s in SHAPES], sparsity=SPARSITIES)
    def test_exact_units_and_smallest_norms_pruned(self, shape, sparsity):
        rng = np.random.default_rng(2)
        kernel = rng.normal(size=shape) * rng.uniform(0.1, 2.0, size=shape[-1])
        keep = masks.unit_mask(kernel, sparsity)
        units = shape[-1]
        n_pruned = int(np.floor(sparsity * units + 0.5))
        alive = masks.units_alive(keep)
        self.assertEqual(int((~alive).sum()), n_pruned)
        norms = np.sqrt((kernel.reshape(-1, units) ** 2).sum(0))
        np.testing.assert_array_equal(~alive, reference_pruned(norms, n_pruned))
        # whole columns: every weight of a unit shares its fate
        np.testing.assert_array_equal(keep, np.broadcast_to(alive, shape))

    def test_tied_units_break_by_index(self):
        kernel = np.ones((4, 6))
        np.testing.assert_array_equal(masks.unit_keep(kernel, 0.5), [False, False, False, True, True, True])

    def test_dead_units_rank_first(self):
        kernel = np.arange(1, 7, dtype=float)[None, :].repeat(3, 0)
        current = np.array([True, True, True, True, True, False])  # largest unit already pruned
        keep = masks.unit_keep(kernel, 0.5, current)
        np.testing.assert_array_equal(keep, [False, False, True, True, True, False])


class GlobalTest(parameterized.TestCase):

    @parameterized.parameters(0.3, 0.8, 0.95)
    def test_global_weight_count_and_threshold(self, sparsity):
        rng = np.random.default_rng(3)
        kernels = [rng.normal(size=(30, 20)) * 0.1, rng.normal(size=(20, 10)), rng.normal(size=(3, 3, 2, 4))]
        keeps = masks.global_weight_masks(kernels, sparsity)
        total = sum(k.size for k in kernels)
        pruned = sum(int((~k).sum()) for k in keeps)
        self.assertEqual(pruned, int(np.floor(sparsity * total + 0.5)))
        all_scores = np.concatenate([np.abs(k).ravel() for k in kernels])
        np.testing.assert_array_equal(np.concatenate([~k.ravel() for k in keeps]),
                                      reference_pruned(all_scores, pruned))
        self.assertGreater((~keeps[0]).mean(), (~keeps[1]).mean())  # small-scale layer pruned harder

    def test_global_units_use_rms(self):
        # Same per-weight scale, different fan-in: raw norms differ by sqrt(fan-in), RMS does not.
        rng = np.random.default_rng(4)
        wide = rng.normal(size=(400, 10))
        narrow = rng.normal(size=(4, 10)) * 0.5  # smaller weights: should lose first by RMS
        keeps = masks.global_unit_keeps([wide, narrow], 0.5)
        self.assertEqual(int((~keeps[0]).sum()) + int((~keeps[1]).sum()), 10)
        self.assertGreater(int((~keeps[1]).sum()), int((~keeps[0]).sum()))
        rms = np.concatenate([np.sqrt((k ** 2).mean(0)) for k in (wide, narrow)])
        np.testing.assert_array_equal(~np.concatenate(keeps), reference_pruned(rms, 10))


class BadInputTest(parameterized.TestCase):

    @parameterized.parameters(1.0, -0.1, 1.5, float("nan"), float("inf"), "half", None)
    def test_bad_sparsity(self, value):
        with self.assertRaisesRegex(ValueError, "sparsity"):
            masks.weight_mask(np.ones((3, 3)), value)
        with self.assertRaisesRegex(ValueError, "sparsity"):
            masks.unit_mask(np.ones((3, 3)), value)

    @parameterized.parameters(np.nan, np.inf, -np.inf)
    def test_non_finite_kernel(self, value):
        kernel = np.ones((4, 4))
        kernel[1, 2] = value
        with self.assertRaisesRegex(ValueError, r"holds 1 NaN/inf"):
            masks.weight_mask(kernel, 0.5)
        with self.assertRaisesRegex(ValueError, r"kernel 1 .*NaN/inf"):
            masks.global_unit_keeps([np.ones((2, 2)), kernel], 0.5)

    def test_empty_and_wrong_mask_shape(self):
        with self.assertRaisesRegex(ValueError, r"shape \(0, 3\)"):
            masks.weight_mask(np.zeros((0, 3)), 0.5)
        with self.assertRaisesRegex(ValueError, r"current mask of kernel has shape \(2,\)"):
            masks.weight_mask(np.ones((2, 2)), 0.5, current=np.ones(2, bool))
