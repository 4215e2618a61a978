"""tfprune.select.importance: Taylor, Wanda, SparseGPT/OBS, refit and LAMP against hand-computed references."""

import numpy as np
from absl.testing import parameterized

from tfprune.select import importance
from tfprune.select import masks

KERNEL = np.array([[1.0, -2.0, 0.5],
                   [3.0, 0.1, -1.0]])  # Dense (in=2, units=3)


def correlated_inputs(rng, n, features):
    """Inputs whose features are correlated (as real activations are), so that reconstruction matters."""
    mixing = rng.normal(size=(features, features)) + 2.0 * np.eye(features)
    return rng.normal(size=(n, features)) @ mixing


def sequential_obs(kernel, hessian, keep):
    """Reference for SparseGPT's update given its mask, written with plain solves (no Cholesky): the pruned rows
    of each column are removed in increasing order; removing row q with the rows before it fixed moves the later
    rows F = q+1.. by the OBS / least-squares step d_F = H_FF⁻¹ H_Fq w_q."""
    result = np.array(kernel, np.float64)
    for j in range(result.shape[1]):
        for q in np.flatnonzero(~keep[:, j]):
            later = slice(q + 1, len(result))
            if q + 1 < len(result):
                result[later, j] += np.linalg.solve(hessian[later, later], hessian[later, q] * result[q, j])
            result[q, j] = 0.0
    return result


def joint_least_squares(kernel, hessian, keep):
    """Closed form with every kept weight free: w'_R = w_R + H_RR⁻¹ H_RS w_S, w'_S = 0, per column."""
    result = np.zeros_like(kernel)
    for j in range(kernel.shape[1]):
        r, s = keep[:, j], ~keep[:, j]
        result[r, j] = kernel[r, j] + np.linalg.solve(hessian[np.ix_(r, r)], hessian[np.ix_(r, s)] @ kernel[s, j])
    return result


def output_error(x, kernel, new_kernel):
    return float(np.linalg.norm(x @ kernel - x @ new_kernel))


class TaylorTest(parameterized.TestCase):

    def test_hand_example(self):
        grad = np.array([[0.5, 1.0, -4.0],
                         [-1.0, 2.0, 2.0]])
        # w·g = [[0.5, -2, -2], [-3, 0.2, -2]]
        np.testing.assert_allclose(importance.taylor_scores(KERNEL, grad), [[0.5, 2.0, 2.0], [3.0, 0.2, 2.0]])
        # per unit |0.5 - 3|, |-2 + 0.2|, |-2 - 2|: signs cancel inside a unit
        np.testing.assert_allclose(importance.taylor_unit_scores(KERNEL, grad), [2.5, 1.8, 4.0])

    def test_shape_mismatch_names_both_shapes(self):
        for scorer in (importance.taylor_scores, importance.taylor_unit_scores):
            with self.assertRaisesRegex(ValueError, r"\(3, 2\).*\(2, 3\)"):
                scorer(KERNEL, np.ones((3, 2)))

    def test_nan_gradient_rejected(self):
        with self.assertRaisesRegex(ValueError, "NaN"):
            importance.taylor_scores(KERNEL, np.full(KERNEL.shape, np.nan))


class WandaTest(parameterized.TestCase):

    def test_hand_example(self):
        x = np.array([[3.0, 0.0],
                      [4.0, 1.0]])
        np.testing.assert_allclose(importance.input_sq_sums(x), [25.0, 1.0])
        np.testing.assert_allclose(importance.input_norms(x), [5.0, 1.0])
        scores = importance.wanda_scores(KERNEL, [5.0, 1.0])
        np.testing.assert_allclose(scores, [[5.0, 10.0, 2.5], [3.0, 0.1, 1.0]])
        # per output, half of each column: Wanda keeps row 0 of column 0 although |1| < |3| (its input is larger)
        np.testing.assert_array_equal(importance.per_output_masks(scores, 0.5),
                                      [[True, True, True], [False, False, False]])

    def test_sq_sums_accumulate_across_batches(self):
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(7, 5)), rng.normal(size=(4, 5))
        np.testing.assert_allclose(importance.input_sq_sums(a) + importance.input_sq_sums(b),
                                   importance.input_sq_sums(np.vstack([a, b])))
        c = rng.normal(size=(2, 3, 5))  # (batch, steps, in): every step is a sample
        np.testing.assert_allclose(importance.input_norms(c), np.sqrt(np.square(c).sum(axis=(0, 1))))

    def test_per_output_hand_example_and_ties(self):
        scores = np.array([[3.0, 1.0],
                           [1.0, 1.0],
                           [2.0, 1.0]])
        # prune_count(0.5, 3) = 2 per column; column 1 is all ties: the lower rows go first
        np.testing.assert_array_equal(importance.per_output_masks(scores, 0.5), [[True, False], [False, False],
                                                                                 [False, True]])

    @parameterized.parameters(0.0, 0.3, 0.5, 0.9)
    def test_per_output_exact_counts(self, sparsity):
        rng = np.random.default_rng(1)
        scores = rng.choice([0.0, 1.0, 2.0], size=(37, 6))  # many ties
        keep = importance.per_output_masks(scores, sparsity)
        np.testing.assert_array_equal((~keep).sum(axis=0), masks.prune_count(sparsity, 37))
        for j in range(6):  # the kept scores of a column are its largest
            if keep[:, j].any() and (~keep[:, j]).any():
                self.assertLessEqual(scores[~keep[:, j], j].max(), scores[keep[:, j], j].min())

    def test_shape_errors(self):
        with self.assertRaisesRegex(ValueError, r"\(3,\).*\(2,\).*\(2, 3\)"):
            importance.wanda_scores(KERNEL, np.ones(3))
        with self.assertRaisesRegex(ValueError, r"\(6,\)"):
            importance.per_output_masks(np.ones(6), 0.5)
        with self.assertRaisesRegex(ValueError, "1.5"):
            importance.per_output_masks(KERNEL, 1.5)


class GramTest(parameterized.TestCase):

    def test_hand_example_and_accumulation(self):
        x = np.array([[1.0, 2.0],
                      [3.0, 4.0]], np.float32)
        g = importance.gram(x)
        self.assertEqual(g.dtype, np.float64)
        np.testing.assert_array_equal(g, [[10.0, 14.0], [14.0, 20.0]])
        rng = np.random.default_rng(2)
        a, b = rng.normal(size=(9, 4)), rng.normal(size=(3, 4))
        np.testing.assert_allclose(importance.gram(a) + importance.gram(b), importance.gram(np.vstack([a, b])))


class ObsPruneTest(parameterized.TestCase):

    def layer(self, seed, n_in, units, n=200, scaled=False):
        rng = np.random.default_rng(seed)
        x = correlated_inputs(rng, n, n_in)
        if scaled:  # features of widely different scales, as real activations have
            x *= rng.lognormal(0.0, 1.0, size=n_in)
        return x, rng.normal(size=(n_in, units))

    @parameterized.parameters(False, True)
    def test_4x3_matches_sequential_closed_form(self, per_output):
        x, kernel = self.layer(3, 4, 3)
        new, keep = importance.obs_prune(kernel, importance.gram(x), 0.5, block_size=4, damp=0.0,
                                         per_output=per_output)
        self.assertEqual(int((~keep).sum()), 6)
        undamped, _ = importance.obs_prune(kernel, importance.gram(x), 0.25, damp=0.0)  # H_22 = 1 keeps H invertible
        self.assertTrue(np.all(np.isfinite(undamped)))
        if per_output:
            np.testing.assert_array_equal((~keep).sum(axis=0), [2, 2, 2])
        np.testing.assert_array_equal(new[~keep], 0.0)
        np.testing.assert_allclose(new, sequential_obs(kernel, x.T @ x, keep), rtol=0, atol=1e-8)
        # the joint least squares (every kept weight free) is the optimum for this mask: never worse
        self.assertLessEqual(output_error(x, kernel, joint_least_squares(kernel, x.T @ x, keep)),
                             output_error(x, kernel, new) + 1e-9)

    def test_4x3_pruned_prefix_equals_joint_least_squares(self):
        # The first two inputs' weights are tiny, so every column prunes rows {0, 1}: with the pruned set before the
        # kept one, SparseGPT's sequential update is the joint least-squares solution w'_R = w_R + H_RR⁻¹ H_RS w_S.
        x, kernel = self.layer(4, 4, 3)
        kernel[:2] *= 1e-3
        hessian = x.T @ x
        new, keep = importance.obs_prune(kernel, importance.gram(x), 0.5, block_size=128, damp=0.0)
        np.testing.assert_array_equal(keep, np.repeat([[False], [False], [True], [True]], 3, axis=1))
        r, s = slice(2, 4), slice(0, 2)
        closed = np.vstack([np.zeros((2, 3)), kernel[r] + np.linalg.solve(hessian[r, r], hessian[r, s] @ kernel[s])])
        np.testing.assert_allclose(new, closed, rtol=0, atol=1e-8)
        lstsq = np.linalg.lstsq(x[:, r], x @ kernel, rcond=None)[0]  # min ||X w - X_R w'_R|| directly
        np.testing.assert_allclose(new[r], lstsq, rtol=0, atol=1e-8)

    @parameterized.product(block_size=(16, 20, 7, 1), sparsity=(0.3, 0.55), per_output=(False, True))
    def test_blocks_propagate_errors_and_counts_are_exact(self, block_size, sparsity, per_output):
        x, kernel = self.layer(5, 48, 5)
        new, keep = importance.obs_prune(kernel, importance.gram(x), sparsity, block_size=block_size, damp=0.0,
                                         per_output=per_output)
        units = 1 if per_output else 5  # what one count covers: a column of a block, or the whole block
        for start in range(0, 48, block_size):  # each block prunes its cumulative share, exactly
            stop = min(start + block_size, 48)
            share = masks.prune_count(sparsity, stop * units) - masks.prune_count(sparsity, start * units)
            pruned = (~keep[start:stop]).sum(axis=0)
            np.testing.assert_array_equal(pruned if per_output else pruned.sum(), share)
        if per_output:
            np.testing.assert_array_equal((~keep).sum(axis=0), masks.prune_count(sparsity, 48))
        else:
            self.assertEqual(int((~keep).sum()), masks.prune_count(sparsity, kernel.size))
        np.testing.assert_allclose(new, sequential_obs(kernel, x.T @ x, keep), rtol=0, atol=1e-8)

    @parameterized.product(sparsity=(0.5, 0.8), per_output=(False, True))
    def test_reconstruction_beats_magnitude(self, sparsity, per_output):
        x, kernel = self.layer(7, 64, 16, n=256, scaled=True)
        new, keep = importance.obs_prune(kernel, importance.gram(x), sparsity, block_size=32, per_output=per_output)
        magnitude = kernel * masks.weight_mask(kernel, sparsity)
        if not per_output:
            self.assertEqual(int((~keep).sum()), int((magnitude == 0).sum()))
        self.assertLess(output_error(x, kernel, new), 0.5 * output_error(x, kernel, magnitude))
        same_mask = kernel * keep  # the update, not only the mask, does the work
        self.assertLess(output_error(x, kernel, new), output_error(x, kernel, same_mask))

    @parameterized.parameters((2, 4), (1, 4), (3, 8))
    def test_n_of_m_exact(self, n, m):
        x, kernel = self.layer(8, 32, 6)
        new, keep = importance.obs_prune(kernel, importance.gram(x), None, block_size=16, pattern=(n, m))
        np.testing.assert_array_equal(keep.reshape(32 // m, m, 6).sum(axis=1), n)
        np.testing.assert_array_equal(new[~keep], 0.0)
        # groups never cross a block, so lazy block propagation gives the same result as one block
        one_block, keep_one = importance.obs_prune(kernel, importance.gram(x), 1 - n / m, block_size=32,
                                                   pattern=(n, m))
        np.testing.assert_array_equal(keep, keep_one)
        np.testing.assert_allclose(new, one_block, rtol=0, atol=1e-9)
        groups = np.abs(kernel).reshape(32 // m, m, 6)  # magnitude N:M: the n largest of each group kept
        ranks = np.argsort(np.argsort(groups, axis=1, kind="stable"), axis=1, kind="stable")
        magnitude = kernel * (ranks >= m - n).reshape(32, 6)
        np.testing.assert_array_equal((magnitude != 0).reshape(32 // m, m, 6).sum(axis=1), n)
        self.assertLess(output_error(x, kernel, new), output_error(x, kernel, magnitude))

    def test_dead_inputs_zeroed_and_dtype_kept(self):
        x, kernel = self.layer(9, 8, 3)
        x[:, 2] = 0.0
        new, keep = importance.obs_prune(kernel.astype(np.float32), importance.gram(x), 0.25)
        self.assertEqual(new.dtype, np.float32)
        self.assertTrue(np.all(np.isfinite(new)))
        np.testing.assert_array_equal(new[2], 0.0)
        np.testing.assert_array_equal(keep[2], False)  # scores 0: pruned first
        self.assertEqual(int((~keep).sum()), 6)
        undamped, _ = importance.obs_prune(kernel, importance.gram(x), 0.25, damp=0.0)  # H_22 = 1 keeps H invertible
        self.assertTrue(np.all(np.isfinite(undamped)))
        unchanged, kept = importance.obs_prune(kernel, importance.gram(x), 0.0)  # within the count: none pruned
        np.testing.assert_array_equal(unchanged, kernel)
        self.assertTrue(kept.all())

    def test_errors_name_the_bad_value(self):
        x, kernel = self.layer(10, 10, 3)
        g = importance.gram(x)
        with self.assertRaisesRegex(ValueError, r"\(3, 3\).*\(10, 10\).*\(10, 3\)"):
            importance.obs_prune(kernel, np.eye(3), 0.5)
        with self.assertRaisesRegex(ValueError, r"m=4.*\(10, 3\)"):
            importance.obs_prune(kernel, g, None, pattern=(2, 4))
        with self.assertRaisesRegex(ValueError, "block_size=6"):
            importance.obs_prune(kernel, g, None, block_size=6, pattern=(1, 5))
        with self.assertRaisesRegex(ValueError, "contradicts"):
            importance.obs_prune(kernel, g, 0.3, pattern=(1, 2))
        with self.assertRaisesRegex(ValueError, r"\(10, 3, 1\)"):
            importance.obs_prune(kernel[..., None], g, 0.5)
        with self.assertRaisesRegex(ValueError, "positive definite"):
            importance.obs_prune(kernel, -np.eye(10), 0.5, damp=0.0)
        with self.assertRaisesRegex(ValueError, "1.0"):
            importance.obs_prune(kernel, g, 1.0)


class RefitTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(11)
        self.x = np.maximum(correlated_inputs(rng, 300, 12), 0.0)  # a ReLU layer's outputs
        self.w, self.b = rng.normal(size=(12, 4)), rng.normal(size=4)
        self.y = self.x @ self.w + self.b
        self.kept = np.array([0, 1, 3, 4, 6, 7, 8, 10])  # units 2, 5, 9, 11 removed

    def test_matches_lstsq_and_beats_slicing(self):
        x_kept = self.x[:, self.kept]
        weights, bias = importance.refit_next_layer(x_kept, self.y)
        ones = np.hstack([x_kept, np.ones((300, 1))])
        reference = np.linalg.lstsq(ones, self.y, rcond=None)[0]
        np.testing.assert_allclose(weights, reference[:-1], rtol=0, atol=1e-9)
        np.testing.assert_allclose(bias, reference[-1], rtol=0, atol=1e-9)
        refit = np.linalg.norm(x_kept @ weights + bias - self.y)
        sliced = np.linalg.norm(x_kept @ self.w[self.kept] + self.b - self.y)
        self.assertLess(refit, 0.9 * sliced)

    def test_without_bias_and_ridge(self):
        x_kept = self.x[:, self.kept]
        weights, bias = importance.refit_next_layer(x_kept, self.y, bias=False)
        self.assertIsNone(bias)
        np.testing.assert_allclose(weights, np.linalg.lstsq(x_kept, self.y, rcond=None)[0], rtol=0, atol=1e-9)
        ridge, _ = importance.refit_next_layer(x_kept, self.y, bias=False, damp=0.1)
        lam = 0.1 * np.mean(np.sum(x_kept ** 2, axis=0))
        np.testing.assert_allclose((x_kept.T @ x_kept + lam * np.eye(8)) @ ridge, x_kept.T @ self.y, atol=1e-8)
        self.assertLess(np.linalg.norm(ridge), np.linalg.norm(weights))

    def test_row_mismatch_names_shapes(self):
        with self.assertRaisesRegex(ValueError, r"\(300, 8\).*\(299, 4\)"):
            importance.refit_next_layer(self.x[:, self.kept], self.y[:-1])


class LampTest(parameterized.TestCase):

    def test_hand_example(self):
        # w² = [[1, 4], [9, 0.25]]; ascending 0.25, 1, 4, 9 with tail sums 14.25, 14, 13, 9
        scores = importance.lamp_scores([[1.0, -2.0], [3.0, 0.5]])
        np.testing.assert_allclose(scores, [[1 / 14, 4 / 13], [1.0, 0.25 / 14.25]], rtol=1e-12)

    def test_ties_are_deterministic(self):
        # all equal: the lower flat index comes first, has the larger tail and is pruned first
        np.testing.assert_allclose(importance.lamp_scores(np.ones((2, 2))), [[1 / 4, 1 / 3], [1 / 2, 1.0]])
        np.testing.assert_array_equal(importance.lamp_scores(np.zeros((2, 2))), 0.0)

    def test_largest_scores_one_and_ranks_as_magnitude(self):
        rng = np.random.default_rng(12)
        kernel = rng.normal(size=(5, 7))
        scores = importance.lamp_scores(kernel)
        self.assertEqual(scores.shape, kernel.shape)
        self.assertEqual(scores.ravel()[np.argmax(np.abs(kernel))], 1.0)
        np.testing.assert_array_equal(masks.weight_mask(scores, 0.6), masks.weight_mask(kernel, 0.6))


def test_lamp_method_allocates_globally_by_lamp_scores_not_by_raw_magnitude():
    """Two layers, the second ten times larger: global magnitude prunes the small layer whole, LAMP (scale-free
    within a layer) prunes both alike. Per layer the LAMP scores are 0.01/0.30, 0.04/0.29, 0.09/0.25, 1 in either
    layer; ties go by position, so 50 % of the 8 weights prunes entries 0 and 1 of both layers."""
    from tfprune.select import scoring  # pylint: disable=import-outside-toplevel
    small = np.array([[0.1, 0.2], [0.3, 0.4]])
    large = 10 * small
    currents = [np.ones((2, 2), bool)] * 2
    by_magnitude = scoring.select(scoring.check_method("weight"), [small, large], [0.5, 0.5], currents, "global")
    by_lamp = scoring.select(scoring.check_method("lamp"), [small, large], [0.5, 0.5], currents, "global")
    assert [k.tolist() for k, _ in by_magnitude] == [[[False, False], [False, False]], [[True, True], [True, True]]]
    assert [k.tolist() for k, _ in by_lamp] == [[[False, False], [True, True]]] * 2
    layer = scoring.select(scoring.check_method("lamp"), [small, large], [0.5, 0.5], currents, "layer")
    assert [k.tolist() for k, _ in layer] == [k.tolist() for k, _ in by_lamp]  # layer scope: magnitude
    assert scoring.check_method("lamp").bias_keep(np.ones(2, bool)) is None and "lamp" in scoring.METHODS
