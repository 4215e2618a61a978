"""tfprune.select.patches: convolution inputs as patch rows, against Keras 3 Conv1D/2D/3D and DepthwiseConv1D/2D
outputs; their Grams (chunked, augmented, additive), square sums, and the errors naming the bad value."""

import itertools
import tracemalloc

import numpy as np
from absl.testing import parameterized

from tfprune._env import keras3 as keras
from tfprune._env import tf
from tfprune.select import importance
from tfprune.select import patches

ATOL = 1e-5
SPATIAL = {1: (11,), 2: (7, 8), 3: (5, 6, 7)}  # odd and even sizes: "same" with stride 2 pads unevenly
KERNELS = {1: {"odd": 3, "even": 4}, 2: {"odd": (3, 3), "even": (2, 4)}, 3: {"odd": (3, 1, 3), "even": (2, 2, 2)}}
CONV = {1: "Conv1D", 2: "Conv2D", 3: "Conv3D"}
# Keras and tf.nn.convolution refuse strides > 1 together with dilation > 1 for Conv*D (DepthwiseConv2D allows it)
STRIDE_DILATION = [(1, 1), (2, 1), (1, 2)]
CIN, COUT = 3, 4


def _conv_cases():
    for rank, padding, (stride, dilation), parity in itertools.product(
            (1, 2, 3), ("valid", "same"), STRIDE_DILATION, ("odd", "even")):
        yield dict(testcase_name=f"{rank}d_{padding}_s{stride}_d{dilation}_{parity}", rank=rank, padding=padding,
                   kernel_size=KERNELS[rank][parity], strides=stride, dilation=dilation)
    for stride, dilation in ((1, 2), (2, 1)):
        yield dict(testcase_name=f"1d_causal_s{stride}_d{dilation}", rank=1, padding="causal", kernel_size=3,
                   strides=stride, dilation=dilation)
    yield dict(testcase_name="2d_same_per_axis", rank=2, padding="same", kernel_size=(3, 2), strides=(2, 1),
               dilation=1)


def batch(rng, rank, n=2, channels=CIN):
    return rng.uniform(-1, 1, size=(n, *SPATIAL[rank], channels)).astype(np.float32)


def keras_conv(x, kernel, strides, padding, dilation):
    """Keras 3's Conv1D/2D/3D output (bias zero) with ``kernel`` (*kernel_size, cin, cout)."""
    rank = x.ndim - 2
    layer = getattr(keras.layers, CONV[rank])(kernel.shape[-1], kernel.shape[:-2], strides=strides, padding=padding,
                                              dilation_rate=dilation)
    layer.build(x.shape)
    layer.set_weights([kernel, np.zeros(kernel.shape[-1], np.float32)])
    return np.asarray(layer(x))


class ConvPatchesTest(parameterized.TestCase):

    @parameterized.named_parameters(*_conv_cases())
    def test_patches_times_kernel_is_the_keras_conv_output(self, rank, padding, kernel_size, strides, dilation):
        rng = np.random.default_rng(rank * 100 + np.max(strides) * 10 + dilation)
        x = batch(rng, rank)
        shape = (*np.broadcast_to(kernel_size, (rank,)), CIN, COUT)
        kernel = rng.normal(scale=0.5, size=shape).astype(np.float32)
        expected = keras_conv(x, kernel, strides, padding, dilation)
        got = patches.conv_patches(x, kernel_size, strides, padding, dilation)
        self.assertEqual(got.dtype, np.float64)
        self.assertEqual(got.shape, (expected.size // COUT, np.prod(shape[:-1])))
        np.testing.assert_allclose(got @ kernel.reshape(-1, COUT), expected.reshape(-1, COUT), atol=ATOL)

    def test_strides_with_dilation_follow_tensorflows_same_padding(self):
        # Not a Keras Conv*D setting, so the reference is built from TensorFlow: pad as the "same" formula says,
        # convolve with stride 1 ("valid"), keep every stride-th output.
        rng = np.random.default_rng(7)
        x = batch(rng, 2)
        kernel = rng.normal(size=(3, 2, CIN, COUT)).astype(np.float32)
        strides, dilation = (2, 3), (2, 2)
        pads = []
        for size, k, s, d in zip(x.shape[1:3], kernel.shape[:2], strides, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        full = tf.nn.convolution(np.pad(x, [(0, 0), *pads, (0, 0)]), kernel, padding="VALID", dilations=dilation)
        expected = full.numpy()[:, ::strides[0], ::strides[1]]
        got = patches.conv_patches(x, (3, 2), strides, "same", dilation)
        np.testing.assert_allclose(got @ kernel.reshape(-1, COUT), expected.reshape(-1, COUT), atol=ATOL)

    def test_padding_is_case_insensitive_and_accepts_tensorflows_spelling(self):
        x = batch(np.random.default_rng(0), 2)
        np.testing.assert_array_equal(patches.conv_patches(x, 3, 2, "SAME"), patches.conv_patches(x, 3, 2, "same"))


class GramTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.rng = np.random.default_rng(1)
        self.x = batch(self.rng, 2, n=3)
        self.args = ((3, 2), (2, 1), "same", 1)
        self.p = patches.conv_patches(self.x, *self.args)

    @parameterized.parameters(1, 5, 56, 57, 10_000)  # one position, part of an output row, one image, several
    def test_gram_is_patches_t_patches_in_any_chunks(self, chunk_rows):
        gram = patches.conv_gram(self.x, *self.args, chunk_rows=chunk_rows)
        np.testing.assert_allclose(gram, self.p.T @ self.p, rtol=1e-12, atol=1e-8)

    def test_grams_of_two_batches_add_up(self):
        other = batch(self.rng, 2, n=2)
        both = np.concatenate([self.x, other])
        for augmented in (False, True):
            total = (patches.conv_gram(self.x, *self.args, augmented=augmented)
                     + patches.conv_gram(other, *self.args, augmented=augmented))
            np.testing.assert_allclose(total, patches.conv_gram(both, *self.args, augmented=augmented), atol=1e-8)
        np.testing.assert_allclose(patches.conv_input_sq_sums(self.x, *self.args)
                                   + patches.conv_input_sq_sums(other, *self.args),
                                   patches.conv_input_sq_sums(both, *self.args), atol=1e-8)

    def test_augmented_gram_is_the_gram_of_patches_and_ones(self):
        ones = np.hstack([self.p, np.ones((len(self.p), 1))])
        gram = patches.conv_gram(self.x, *self.args, augmented=True, chunk_rows=7)
        np.testing.assert_allclose(gram, ones.T @ ones, atol=1e-8)
        self.assertEqual(gram[-1, -1], len(self.p))  # 3 images x 4 x 8 positions

    def test_the_fast_gram_sums_each_chunk_in_float32(self):
        exact = patches.conv_gram(self.x, *self.args, augmented=True, chunk_rows=7)
        fast = patches.conv_gram(self.x, *self.args, augmented=True, chunk_rows=7, fast=True)
        self.assertEqual(fast.dtype, np.float64)
        np.testing.assert_allclose(fast, exact, rtol=1e-5, atol=1e-5)

    def test_sq_sums_are_the_gram_diagonal(self):
        for args in (self.args, ((2, 4), 1, "valid", 2)):
            gram = patches.conv_gram(self.x, *args)
            np.testing.assert_allclose(patches.conv_input_sq_sums(self.x, *args, chunk_rows=9), np.diag(gram),
                                       rtol=1e-12)

    def test_the_patch_matrix_is_never_held_whole(self):
        x = batch(self.rng, 2, n=1, channels=32).repeat(64, axis=0)  # 64 images x 56 positions, d = 288
        whole = 64 * 56 * 288 * 8  # 8.3 MB
        tracemalloc.start()
        try:
            patches.conv_gram(x, 3, 1, "same", chunk_rows=128)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        self.assertLess(peak, whole / 4)  # a 112-row chunk, the Gram and its update: about 1.6 MB

    def test_sparsegpt_on_a_conv_reconstructs_its_output(self):
        # The glue: obs_prune on kernel.reshape(-1, cout) with conv_gram updates the kept weights so that the conv's
        # output error is below that of its own mask without the update, and below magnitude pruning's, on inputs
        # smooth in space as images are (neighbouring taps correlated; over 20 seeds both ratios stay below 0.84).
        x = batch(self.rng, 2, n=8).cumsum(axis=1).cumsum(axis=2)
        kernel = self.rng.normal(size=(3, 3, CIN, COUT)).reshape(-1, COUT)
        p = patches.conv_patches(x, 3, 1, "same")
        pruned, keep = importance.obs_prune(kernel, patches.conv_gram(x, 3, 1, "same"), 0.5)
        self.assertEqual(keep.sum(), kernel.size // 2)
        magnitude = np.where(np.abs(kernel) >= np.median(np.abs(kernel)), kernel, 0.0)

        def error(weights):
            return np.linalg.norm(p @ (kernel - weights))

        self.assertLess(error(pruned), 0.9 * error(np.where(keep, kernel, 0.0)))
        self.assertLess(error(pruned), 0.9 * error(magnitude))


class DepthwiseTest(parameterized.TestCase):

    @parameterized.named_parameters(
        ("valid", (3, 2), 1, "valid", 1), ("same_strided", (3, 3), 2, "same", 1),
        ("same_dilated", (2, 2), 1, "same", 2), ("strided_and_dilated", (3, 2), 2, "same", 2),  # Keras allows both here
        ("1d", (4,), 2, "same", 1))
    def test_channel_taps_times_its_kernel_are_its_keras_outputs(self, kernel_size, strides, padding, dilation):
        rank, multiplier = len(kernel_size), 2
        rng = np.random.default_rng(3)
        x = batch(rng, rank)
        kernel = rng.normal(size=(*kernel_size, CIN, multiplier)).astype(np.float32)
        layer = getattr(keras.layers, f"DepthwiseConv{rank}D")(kernel_size, strides=strides, padding=padding,
                                                                depth_multiplier=multiplier, dilation_rate=dilation,
                                                                use_bias=False)
        layer.build(x.shape)
        layer.set_weights([kernel])
        outputs = np.asarray(layer(x)).reshape(-1, CIN * multiplier)
        taps = np.prod(kernel_size)
        channel_taps = patches.conv_patches(x, kernel_size, strides, padding, dilation).reshape(-1, taps, CIN)
        gram = patches.depthwise_gram(x, kernel_size, strides, padding, dilation, chunk_rows=5)
        self.assertEqual(gram.shape, (CIN, taps, taps))
        for c in range(CIN):
            t = channel_taps[:, :, c]
            np.testing.assert_allclose(t @ kernel[..., c, :].reshape(taps, multiplier),
                                       outputs[:, c * multiplier:(c + 1) * multiplier], atol=ATOL)  # c·m + m
            np.testing.assert_allclose(gram[c], t.T @ t, atol=1e-8)
        sq_sums = patches.conv_input_sq_sums(x, kernel_size, strides, padding, dilation).reshape(taps, CIN)
        np.testing.assert_allclose(np.diagonal(gram, axis1=1, axis2=2), sq_sums.T, rtol=1e-12)

    def test_augmented_depthwise_gram(self):
        x = batch(np.random.default_rng(4), 2)
        gram = patches.depthwise_gram(x, 2, 1, "valid", augmented=True)
        taps = patches.conv_patches(x, 2, 1, "valid").reshape(-1, 4, CIN)
        for c in range(CIN):
            ones = np.hstack([taps[:, :, c], np.ones((len(taps), 1))])
            np.testing.assert_allclose(gram[c], ones.T @ ones, atol=1e-8)


FUNCTIONS = [patches.conv_patches, patches.conv_gram, patches.conv_input_sq_sums, patches.depthwise_gram]


class ErrorsTest(parameterized.TestCase):

    def setUp(self):
        super().setUp()
        self.x = batch(np.random.default_rng(5), 2)

    def assert_each_raises(self, pattern, x, *args, **kwargs):
        for function in FUNCTIONS:
            with self.assertRaisesRegex(ValueError, pattern, msg=function.__name__):
                function(x, *args, **kwargs)

    def test_kernel_size_of_the_wrong_length(self):
        self.assert_each_raises(r"kernel_size \(3, 3, 3\) has 3 entries; expected an int or 2 ints", self.x, (3, 3, 3))

    def test_padding_not_valid_or_same(self):
        self.assert_each_raises(r"padding 'full' is not one of 'valid', 'same'", self.x, 3, padding="full")
        self.assert_each_raises(r"padding 'causal' .*x has 2", self.x, 3, padding="causal")  # Conv1D only

    def test_x_of_the_wrong_rank(self):
        self.assert_each_raises(r"x has shape \(4, 3\); expected a channels-last batch", np.ones((4, 3)), 3)

    def test_non_finite_x(self):
        self.x[0, 1, 2, 0] = np.nan
        self.assert_each_raises(r"x of shape \(2, 7, 8, 3\) holds 1 NaN/inf values", self.x, 3)

    def test_other_bad_values(self):
        self.assert_each_raises(r"strides 0 must be at least 1", self.x, 3, strides=0)
        self.assert_each_raises(r"dilation_rate 1.5 is not an int", self.x, 3, dilation_rate=1.5)
        self.assert_each_raises(r"spatial size 7 is smaller than the dilated kernel span 9", self.x, 3,
                                dilation_rate=4)
        with self.assertRaisesRegex(ValueError, r"chunk_rows 0 must be at least 1"):
            patches.conv_gram(self.x, 3, chunk_rows=0)
