"""tfprune.callbacks: one-shot and scheduled rank pruning during fit, step-for-step agreement with TF-MOT."""

import glob
import os

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from absl.testing import parameterized

from tfprune import callbacks, pruning
from tfprune.layers import registry
from tfprune.experiments import models
from tfprune._env import keras, tf

sparsity_lib = tfmot.sparsity.keras


def _data(n=512):
    rng = np.random.default_rng(0)
    return rng.random((n, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


class _ZerosPerStep(keras.callbacks.Callback):
    """Records the pruned-weight count of every kernel after each batch (ours: kernel_mask; TF-MOT: its mask)."""

    def __init__(self, masks_fn):
        super().__init__()
        self.masks_fn = masks_fn
        self.counts = []

    def on_train_batch_end(self, batch, logs=None):
        self.counts.append([int(m.size - np.count_nonzero(m)) for m in self.masks_fn(self.model)])


def _our_masks(model):
    return [l.kernel_mask for l in model.layers if registry.is_prunable(l)]


def _tfmot_masks(model):
    return [l.pruning_vars[0][1].numpy() for l in model.layers if getattr(l, "pruning_vars", None)]


SCHEDULES = (
    ("polynomial", lambda: sparsity_lib.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=20, frequency=5)),
    ("polynomial_cubic", lambda: sparsity_lib.PolynomialDecay(0.2, 0.8, begin_step=4, end_step=12, power=3,
                                                               frequency=1)),
    ("constant", lambda: sparsity_lib.ConstantSparsity(0.75, begin_step=3, frequency=4)),
)


class RankPruningTest(parameterized.TestCase):

    @parameterized.named_parameters(*SCHEDULES)
    @pytest.mark.slow
    def test_same_sparsity_as_tfmot_at_every_step(self, make_schedule):
        x, y = _data()
        keras.utils.set_random_seed(1)
        base = models.build("lenet_300_100")
        ours = models.compile_model(pruning.make_prunable(base))
        ours_rec = _ZerosPerStep(_our_masks)
        ours.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False,
                 callbacks=[callbacks.RankPruning("weight", make_schedule()), ours_rec])
        theirs = models.compile_model(sparsity_lib.prune_low_magnitude(base, pruning_schedule=make_schedule()))
        theirs_rec = _ZerosPerStep(_tfmot_masks)
        theirs.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False,
                   callbacks=[sparsity_lib.UpdatePruningStep(), theirs_rec])
        self.assertLen(ours_rec.counts, 32)
        # TF-MOT keeps round(n·(1-s)) in float32 with ties kept; ours prunes round(s·n): at most 1 weight apart.
        diff = np.abs(np.array(ours_rec.counts) - np.array(theirs_rec.counts))
        self.assertLessEqual(int(diff.max()), 1, f"ours {ours_rec.counts}\ntheirs {theirs_rec.counts}")
        self.assertGreater(np.array(ours_rec.counts)[-1].sum(), 0)

    def test_masks_only_shrink_and_stay_zero(self):
        x, y = _data()
        model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
        snapshots = []
        recorder = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, l: snapshots.append([m > 0 for m in _our_masks(model)]))
        schedule = sparsity_lib.PolynomialDecay(0.0, 0.95, begin_step=1, end_step=30, frequency=3)
        model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                  callbacks=[callbacks.RankPruning("unit", schedule, layers=["fc1", "fc2"]), recorder])
        for earlier, later in zip(snapshots, snapshots[1:]):
            for a, b in zip(earlier, later):
                self.assertFalse(np.any(b & ~a))
        report = {r.name: r for r in pruning.sparsity_report(model)}
        self.assertEqual((report["fc1"].units_kept, report["fc2"].units_kept, report["logits"].units_kept),
                         (15, 5, 10))

    def test_one_shot_prunes_at_begin_then_masks_fixed(self):
        x, y = _data()
        model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
        callback = callbacks.RankPruning("weight", 0.9, scope="global")
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[callback])
        masks = _our_masks(model)
        self.assertEqual(callback.history, [(0, 0.9)])
        total = sum(m.size for m in masks)
        self.assertEqual(sum(int((m == 0).sum()) for m in masks), int(np.floor(0.9 * total + 0.5)))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[callback])
        for a, b in zip(masks, _our_masks(model)):
            np.testing.assert_array_equal(a, b)

    def test_per_layer_plan(self):
        x, y = _data(128)
        model = models.compile_model(pruning.make_prunable(models.build("fc_1000")))
        model.fit(x, y, batch_size=64, epochs=1, verbose=0,
                  callbacks=[callbacks.RankPruning("weight", None, layers={"fc2": 0.95, "fc3": 0.5})])
        report = {r.name: round(r.sparsity, 4) for r in pruning.sparsity_report(model)}
        self.assertEqual((report["fc1"], report["fc2"], report["fc3"]), (0.0, 0.95, 0.5))

    @parameterized.named_parameters(
        ("method", dict(method="filter"), "method 'filter'"),
        ("scope", dict(scope="all"), "scope 'all'"),
        ("sparsity", dict(schedule=1.2), r"sparsity 1.2 is outside"),
        ("update_every", dict(update_every=0), "update_every 0"),
        ("schedule_type", dict(schedule="poly"), "schedule 'poly' is neither"),
        ("none_without_plan", dict(schedule=None), "schedule None needs a per-layer plan"),
    )
    def test_bad_arguments(self, kwargs, pattern):
        with self.assertRaisesRegex(ValueError, pattern):
            callbacks.RankPruning(**kwargs)

    def test_bad_layer_fails_at_train_begin_before_any_step(self):
        x, y = _data(64)
        model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
        with self.assertRaisesRegex(ValueError, "layer 'fc7' does not exist"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.RankPruning("weight", 0.5, layers=["fc7"])])


class SparsitySummariesTest(parameterized.TestCase):

    def test_writes_per_layer_scalars(self):
        x, y = _data(128)
        log_dir = self.create_tempdir().full_path
        model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
        model.fit(x, y, epochs=2, batch_size=64, verbose=0,
                  callbacks=[callbacks.RankPruning("weight", 0.6), callbacks.SparsitySummaries(log_dir)])
        events = glob.glob(os.path.join(log_dir, "train", "events.out.tfevents.*"))
        self.assertNotEmpty(events)
        values = {}
        for event in tf.compat.v1.train.summary_iterator(events[0]):
            for value in event.summary.value:
                if value.tag.startswith("sparsity/"):
                    values[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
        self.assertAlmostEqual(values[("sparsity/fc1", 1)], 0.6, places=5)
        self.assertAlmostEqual(values[("sparsity/overall", 0)], 0.6, places=3)
