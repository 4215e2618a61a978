"""tfprune.baseline: training on real data, and the cache (a second call loads instead of training)."""

import numpy as np
import pytest

from tfprune.experiments import baseline


@pytest.mark.slow
def test_second_call_loads_from_cache(small_fashion, tmp_path):
    kwargs = dict(epochs=1, batch_size=64, seed=1, cache_dir=str(tmp_path), datasets=small_fashion,
                  train_size=1000, verbose=0)
    first = baseline.train_baseline("lenet_300_100", "fashion_mnist", **kwargs)
    assert not first.from_cache and first.test_accuracy > 0.5
    second = baseline.train_baseline("lenet_300_100", "fashion_mnist", **kwargs)
    assert second.from_cache and second.path == first.path
    assert second.test_accuracy == first.test_accuracy
    x = small_fashion[1][0][:50]
    np.testing.assert_array_equal(first.model.predict(x, verbose=0), second.model.predict(x, verbose=0))
    other = baseline.train_baseline("lenet_300_100", "fashion_mnist", **dict(kwargs, seed=2))
    assert not other.from_cache


@pytest.mark.slow
def test_same_seed_same_result(small_fashion, tmp_path):
    kwargs = dict(epochs=1, batch_size=64, seed=5, datasets=small_fashion, train_size=500, verbose=0)
    a = baseline.train_baseline("lenet_300_100", "fashion_mnist", cache_dir=str(tmp_path / "a"), **kwargs)
    b = baseline.train_baseline("lenet_300_100", "fashion_mnist", cache_dir=str(tmp_path / "b"), **kwargs)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_bad_recipe():
    with pytest.raises(ValueError, match="epochs 0"):
        baseline.train_baseline("fc_1000", "mnist", epochs=0)
    with pytest.raises(ValueError, match="unknown model 'x'"):
        baseline.train_baseline("x", "mnist")
