"""A point's cost: weight-file sizes measured (gzip beside the evaluation) only when asked, in a folder that never
mixes points with and without them; every point evaluated on one reused plain copy, with a fresh copy's figures."""

import gzip
import os

import keras as keras3
import pytest
import tf_keras

from tfprune import pruning
from tfprune.experiments import models, point
from tfprune.experiments.results import records
from tfprune.experiments.results import store


def test_gzip_sizes_are_measured_only_when_asked_and_equal_a_direct_gzip(trained_lenet, small_fashion, tmp_path):
    model = trained_lenet[0]
    plain = point.run_point(model, small_fashion, "weight", 90.0, histograms=False)
    assert (plain.dense_size_bytes, plain.gzip_size_bytes) == (None, None)
    sized = point.run_point(model, small_fashion, "weight", 90.0, histograms=False, gzip_size=True)
    assert sized.test_accuracy == plain.test_accuracy  # the same point, only its sizes added
    stripped = pruning.strip(pruning.prune(pruning.make_prunable(model), 0.9, "weight"))
    path = str(tmp_path / "w.h5")
    stripped.save_weights(path)
    payload = open(path, "rb").read()
    assert sized.dense_size_bytes == len(payload)
    assert sized.gzip_size_bytes == len(gzip.compress(payload, records.GZIP_LEVEL)) < len(payload) / 3


@pytest.mark.parametrize("there, now, message", [
    (6, None, "gzip sizes: measured there (resume with --gzip_size)"),
    (None, 6, "gzip sizes: not measured there (resume without --gzip_size)"),
])
def test_a_folder_does_not_mix_points_with_and_without_gzip_sizes(tmp_path, there, now, message):
    out = str(tmp_path)
    assert store.check_same_config(out, {"gzip_level": there}) is None
    os.makedirs(os.path.join(out, store.POINTS))
    open(os.path.join(out, store.POINTS, "weight-k0.json"), "w").write("{}")
    refusal = store.check_same_config(out, {"gzip_level": now})
    assert refusal and message in refusal


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["tf_keras", "keras3"])
def test_a_point_evaluated_on_the_reused_copy_has_the_figures_of_a_fresh_one(stack, small_fashion):
    k = tf_keras if stack == "tf_keras" else keras3
    k.utils.set_random_seed(0)
    model = models.compile_model(k.Sequential([k.Input((28, 28)), k.layers.Flatten(),
                                               k.layers.Dense(64, activation="relu", name="fc1"),
                                               k.layers.Dense(10, name="out")]))
    model.fit(*small_fashion[0], epochs=1, verbose=0)
    first = point.run_point(model, small_fashion, "weight", 90.0, histograms=False)
    reused = point.run_point(model, small_fashion, "unit", 50.0)  # on the copy the first point made
    point._EVALUATORS.clear()  # pylint: disable=protected-access
    fresh = point.run_point(model, small_fashion, "unit", 50.0)
    assert (reused.test_accuracy, reused.test_loss) == (fresh.test_accuracy, fresh.test_loss)
    assert reused.histograms == fresh.histograms and reused.layer_sparsity == fresh.layer_sparsity
    again = point.run_point(model, small_fashion, "weight", 90.0, histograms=False)
    assert (again.test_accuracy, again.test_loss) == (first.test_accuracy, first.test_loss)
    assert fresh.test_accuracy != first.test_accuracy  # the copy took each point's own weights


@pytest.mark.parametrize("there, now, message", [
    (None, "fit_budget", "holds a sweep made with other settings (a sweep there, a budget search (fit_budget) now)"),
    ("fit_budget", None, "holds a budget search (fit_budget) made with other settings (a budget search (fit_budget) "
                         "there, a sweep now)"),
])
def test_a_refusal_names_what_wrote_the_folder(tmp_path, there, now, message):
    # Was "holds a sweep ... (--search: None there, 'fit_budget' now)" whatever had written it.
    out = str(tmp_path)
    assert store.check_same_config(out, {"search": there}) is None
    os.makedirs(os.path.join(out, store.POINTS))
    open(os.path.join(out, store.POINTS, "weight-k0.json"), "w").write("{}")
    assert message in store.check_same_config(out, {"search": now})
