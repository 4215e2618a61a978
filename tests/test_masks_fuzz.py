"""Property tests of tfprune.select.masks over random shapes, dtypes, sparsities and tie patterns (hypothesis).

For every input the functions either return masks with the exact documented counts, keeping the largest
magnitudes (norms), or raise the documented ValueError: never another exception. Examples are derandomized and
bounded so the suite is repeatable and quick; ``TFPRUNE_FUZZ_EXAMPLES=5000 pytest tests/test_masks_fuzz.py`` fuzzes
harder.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfprune.select import masks

# float64 weights above ~1e154 overflow the unit norm to inf (ties, broken by index): a documented limit.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in square:RuntimeWarning")

FUZZ = settings(max_examples=int(os.environ.get("TFPRUNE_FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
                database=None, suppress_health_check=[HealthCheck.too_slow])

FLOATS = (np.float16, np.float32, np.float64)
# int64 magnitudes are ranked as float64, exact up to 2**53 (see docs/RELIABILITY.md): larger ones are not drawn.
INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)
sparsities = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)


@st.composite
def kernels(draw, shape=SHAPES):
    """A finite kernel of a float or int dtype; often with many exact ties (few distinct values, both signs)."""
    dtype = np.dtype(draw(st.sampled_from(FLOATS + INTS)))
    shape = draw(shape)
    if draw(st.booleans()):  # ties: values from a small pool, zeros included
        pool = draw(st.lists(st.integers(-3, 3), min_size=1, max_size=4)) + [0]
        if dtype.kind == "u":
            pool = [abs(v) for v in pool]
        elements = st.sampled_from(pool).map(dtype.type)
    elif dtype.kind == "f":
        width = dtype.itemsize * 8
        elements = st.floats(allow_nan=False, allow_infinity=False, width=width, min_value=-1e4, max_value=1e4)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -2 ** 53), min(int(info.max), 2 ** 53))
    return draw(hnp.arrays(dtype, shape, elements=elements))


def reference_pruned(scores, count):
    """Stable sort by score (ties: lower flat index first), the first ``count`` pruned."""
    order = np.argsort(np.asarray(scores, np.float64).ravel(), kind="stable")
    pruned = np.zeros(np.size(scores), bool)
    pruned[order[:count]] = True
    return pruned


def _assert_threshold(scores, keep):
    """Everything kept scores at least as high as everything pruned (kept ⊇ the larger magnitudes)."""
    scores, keep = np.asarray(scores, np.float64).ravel(), np.asarray(keep).ravel()
    if keep.any() and (~keep).any():
        assert scores[~keep].max() <= scores[keep].min()


@FUZZ
@given(kernel=kernels(), sparsity=sparsities)
def test_weight_mask_exact_count_and_largest_kept(kernel, sparsity):
    keep = masks.weight_mask(kernel, sparsity)
    count = masks.prune_count(sparsity, kernel.size)
    magnitude = np.abs(kernel.astype(np.float64))
    assert keep.shape == kernel.shape and keep.dtype == bool
    assert int((~keep).sum()) == count
    _assert_threshold(magnitude, keep)
    np.testing.assert_array_equal(~keep.ravel(), reference_pruned(magnitude, count))


@FUZZ
@given(data=st.data(), kernel=kernels(), sparsity=sparsities)
def test_weight_mask_only_shrinks(data, kernel, sparsity):
    current = data.draw(hnp.arrays(bool, kernel.shape))
    keep = masks.weight_mask(kernel, sparsity, current)
    assert not (keep & ~current).any()  # pruned stays pruned
    count = masks.prune_count(sparsity, kernel.size)
    assert int((~keep).sum()) == max(count, int((~current).sum()))
    _assert_threshold(np.where(current, np.abs(kernel.astype(np.float64)), -1.0), keep)


@FUZZ
@given(kernel=kernels(), sparsity=sparsities)
def test_unit_mask_exact_units_smallest_norms_pruned(kernel, sparsity):
    keep = masks.unit_mask(kernel, sparsity)
    units = kernel.shape[-1]
    assert keep.shape == kernel.shape and keep.dtype == bool
    columns = keep.reshape(-1, units)
    assert (columns == columns[0]).all()  # whole units (columns / filters), never single weights
    kept = columns[0]
    count = masks.prune_count(sparsity, units)
    assert int((~kept).sum()) == count
    norms = np.sqrt(np.square(kernel.astype(np.float64)).reshape(-1, units).sum(axis=0))
    _assert_threshold(norms, kept)
    np.testing.assert_array_equal(~kept, reference_pruned(norms, count))


@FUZZ
@given(kernel_list=st.lists(kernels(), min_size=1, max_size=4), sparsity=sparsities)
def test_global_weight_masks_count_and_threshold_across_kernels(kernel_list, sparsity):
    keeps = masks.global_weight_masks(kernel_list, sparsity)
    assert [k.shape for k in keeps] == [k.shape for k in kernel_list]
    total = sum(k.size for k in kernel_list)
    assert sum(int((~k).sum()) for k in keeps) == masks.prune_count(sparsity, total)
    scores = np.concatenate([np.abs(k.astype(np.float64)).ravel() for k in kernel_list])
    _assert_threshold(scores, np.concatenate([k.ravel() for k in keeps]))


@FUZZ
@given(kernel_list=st.lists(kernels(), min_size=1, max_size=4), sparsity=sparsities)
def test_global_unit_keeps_count_and_rms_threshold(kernel_list, sparsity):
    keeps = masks.global_unit_keeps(kernel_list, sparsity)
    assert [k.shape for k in keeps] == [(k.shape[-1],) for k in kernel_list]
    total = sum(k.shape[-1] for k in kernel_list)
    assert sum(int((~k).sum()) for k in keeps) == masks.prune_count(sparsity, total)
    rms = np.concatenate([np.sqrt(np.square(k.astype(np.float64)).reshape(-1, k.shape[-1]).mean(axis=0))
                          for k in kernel_list])
    kept = np.concatenate(keeps)
    if kept.any() and (~kept).any():  # RMS = norm / sqrt(fan-in), up to float64 rounding of the two formulas
        assert rms[~kept].max() <= rms[kept].min() * (1 + 1e-12)


@FUZZ
@given(n=st.integers(0, 10 ** 6), a=sparsities, b=sparsities)
def test_prune_count_is_bounded_and_monotone(n, a, b):
    low, high = sorted((a, b))
    assert 0 <= masks.prune_count(low, n) <= masks.prune_count(high, n) <= n


BAD_SPARSITIES = st.one_of(st.floats(allow_nan=True), st.just(1.0), st.just(-0.0), st.none(), st.text(max_size=3),
                           st.integers(-3, 3))


@st.composite
def non_finite(draw):
    """A float kernel with at least one NaN, inf or -inf."""
    kernel = draw(hnp.arrays(st.sampled_from(FLOATS), SHAPES, elements=st.floats(-10, 10, width=16)))
    kernel.flat[draw(st.integers(0, kernel.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return kernel


ANY_ARRAYS = st.one_of(
    kernels(),
    non_finite(),
    hnp.arrays(st.sampled_from(FLOATS), SHAPES),  # any float, up to the dtype's largest
    hnp.arrays(st.sampled_from([bool, np.complex64, "U1"]), SHAPES),
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)),  # scalars, empty
)


def _documented(call):
    """Calls ``call``; a ValueError is the documented refusal, any other exception fails the test."""
    try:
        call()
    except ValueError:
        return False
    return True


@FUZZ
@given(kernel=ANY_ARRAYS, sparsity=BAD_SPARSITIES)
@pytest.mark.slow
def test_any_input_returns_or_raises_value_error_only(kernel, sparsity):
    for function in (masks.weight_mask, masks.unit_mask):
        ok = _documented(lambda: function(kernel, sparsity))
        valid_kernel = kernel.ndim >= 1 and kernel.size > 0 and kernel.dtype.kind in "fiu" and np.isfinite(
            kernel.astype(np.float64) if kernel.dtype.kind in "fiu" else 0).all()
        try:
            valid_sparsity = 0.0 <= float(sparsity) < 1.0
        except (TypeError, ValueError):
            valid_sparsity = False
        assert ok == (valid_kernel and valid_sparsity), (kernel.dtype, kernel.shape, sparsity)
    _documented(lambda: masks.global_weight_masks([kernel, kernel], sparsity))
    _documented(lambda: masks.global_unit_keeps([kernel], sparsity))


@FUZZ
@given(kernel=kernels(), sparsity=sparsities, data=st.data())
def test_wrong_current_mask_shape_is_a_value_error(kernel, sparsity, data):
    shape = data.draw(SHAPES)
    assume(shape != kernel.shape)
    with pytest.raises(ValueError, match="current mask of kernel has shape"):
        masks.weight_mask(kernel, sparsity, np.ones(shape, bool))


def test_int64_beyond_2_53_ranks_by_float64():
    # Documented limit: magnitudes are compared as float64, so int64 values that differ only beyond 2**53 tie and
    # the lower index is pruned first, even if it is the larger integer.
    kernel = np.array([2 ** 62 + 1, 2 ** 62], np.int64)
    np.testing.assert_array_equal(masks.weight_mask(kernel, 0.5), [False, True])
