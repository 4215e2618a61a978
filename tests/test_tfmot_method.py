"""tfprune.tfmot_baseline: TF-MOT schedules, prune_low_magnitude fine-tuning, TF-MOT's step and rounding rules."""

import glob
import os

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
from absl.testing import parameterized

from tfprune import pruning
from tfprune.select import masks
from tfprune.layers import registry
from tfprune.experiments import models
from tfprune.experiments import tfmot_method as tb
from tfprune._env import keras, tf

sparsity_api = tfmot.sparsity.keras
TRAIN = 1000
BATCH = 100  # 10 steps per epoch on TRAIN images
LENET_KERNELS = {"fc1": 784 * 300, "fc2": 300 * 100, "logits": 100 * 10}


def _zeros(model):
    return {r.name: r.zeros for r in pruning.sparsity_report(model)}


class ScheduleTest(parameterized.TestCase):

    def test_polynomial_reaches_target_at_end_step(self):
        schedule = tb.make_schedule("polynomial", 0.8, begin_step=2, end_step=10, frequency=4)
        self.assertIsInstance(schedule, sparsity_api.PolynomialDecay)
        self.assertIsNone(tb.tfmot_sparsity_at_step(schedule, 4))
        self.assertAlmostEqual(tb.tfmot_sparsity_at_step(schedule, 6), 0.8 * (1 - 0.5 ** 3), places=6)
        self.assertAlmostEqual(tb.tfmot_sparsity_at_step(schedule, 10), 0.8, places=6)
        self.assertIsNone(tb.tfmot_sparsity_at_step(schedule, 14))

    def test_constant_prunes_every_frequency_steps(self):
        schedule = tb.make_schedule("constant", 0.6, begin_step=3, end_step=-1, frequency=5)
        self.assertIsInstance(schedule, sparsity_api.ConstantSparsity)
        applied = {s: tb.tfmot_sparsity_at_step(schedule, s) for s in range(1, 20)}
        self.assertEqual([s for s, v in applied.items() if v is not None], [3, 8, 13, 18])
        self.assertAlmostEqual(applied[8], 0.6, places=6)

    def test_oneshot_prunes_once_at_the_first_training_step(self):
        schedule = tb.make_schedule("oneshot", 0.9, begin_step=0, end_step=50)
        applied = [s for s in range(0, 30) if tb.tfmot_sparsity_at_step(schedule, s) is not None]
        self.assertEqual(applied, [1])
        self.assertAlmostEqual(tb.tfmot_sparsity_at_step(schedule, 1), 0.9, places=6)

    def test_step_zero_is_never_a_pruning_step_for_tfmot_training(self):
        # The literal "one-shot at step 0" never fires: TF-MOT's first training step is 1.
        literal = sparsity_api.ConstantSparsity(0.9, begin_step=0, end_step=0, frequency=1)
        self.assertIsNone(tb.final_pruning_step(literal, 100))
        self.assertEqual(tb.final_pruning_step(sparsity_api.ConstantSparsity(0.5, 0, frequency=4), 10), 8)
        self.assertEqual(tb.final_pruning_step(tb.make_schedule("polynomial", 0.5, 0, 12, frequency=3), 10), 9)
        self.assertEqual(tb.final_pruning_step(tb.make_schedule("oneshot", 0.5), 10), 1)

    @parameterized.named_parameters(
        ("unknown_kind", dict(kind="cubic"), "'cubic'"),
        ("sparsity_one", dict(target_sparsity=1.0), "1.0"),
        ("sparsity_negative", dict(target_sparsity=-0.1), "-0.1"),
        ("end_before_begin", dict(begin_step=10, end_step=5), "end_step 5"),
        ("negative_begin", dict(begin_step=-1), "begin_step -1"),
        ("zero_frequency", dict(frequency=0), "frequency 0"),
        ("ramp_not_multiple", dict(begin_step=0, end_step=126, frequency=100), "frequency 100"),
        ("zero_length_ramp", dict(begin_step=5, end_step=5), "end_step 5"),
        ("initial_above_target", dict(initial_sparsity=0.9), "initial_sparsity 0.9"),
        ("polynomial_forever", dict(end_step=-1), "end_step -1"),
        ("float_step", dict(end_step=10.0), "10.0"),
    )
    def test_bad_arguments(self, overrides, fragment):
        kwargs = dict(kind="polynomial", target_sparsity=0.5, begin_step=0, end_step=10, frequency=1)
        kwargs.update(overrides)
        with self.assertRaisesRegex(ValueError, fragment.replace(".", r"\.")):
            tb.make_schedule(**kwargs)

    def test_constant_may_run_until_training_ends(self):
        self.assertEqual(tb.make_schedule("constant", 0.5, 0, -1).end_step, -1)

    def test_steps_for(self):
        self.assertEqual(tb.steps_for(2, 1000, 128), 16)
        self.assertEqual(tb.steps_for(1, 1000, 100), 10)
        for bad in [(1, 1000, 0), (-1, 1000, 10), (1, -5, 10)]:
            with self.assertRaises(ValueError):
                tb.steps_for(*bad)


class RoundingTest(parameterized.TestCase):
    """tfmot_prune_count agrees with the masks TF-MOT actually computes, including its rounding corner cases."""

    @pytest.fixture(autouse=True)
    def _data(self, small_fashion):
        self.pixels = small_fashion[0][0][:12].reshape(4, -1)  # 4 rows of 2,352 real pixels

    @parameterized.named_parameters(
        ("half_to_even", 3, 0.5, 1),       # keeps round(1.5) = 2; round-half-up of s·n would prune 2
        ("float32_tips_half", 5, 0.9, 4),   # float32(1 - 0.9)·5 = 0.50000012 -> keeps 1
        ("keep_at_least_one", 10, 0.99, 9),
        ("plain", 1000, 0.9, 900),
        ("fc_kernel", 784 * 30, 0.75, 17640),
    )
    def test_matches_tfmot_mask(self, n, sparsity, expected):
        units = 10 if n % 10 == 0 else 1
        keras.utils.set_random_seed(n)
        layer = sparsity_api.prune_low_magnitude(
            keras.layers.Dense(units, use_bias=False),
            pruning_schedule=sparsity_api.ConstantSparsity(sparsity, begin_step=1, end_step=1, frequency=1))
        layer.build((None, n // units))
        layer.pruning_step.assign(0)  # what UpdatePruningStep.on_train_begin does
        layer(tf.constant(self.pixels[:, :n // units]), training=True)  # step 1: mask update
        mask = layer.pruning_vars[0][1].numpy()
        self.assertEqual(int(mask.size - np.count_nonzero(mask)), expected)
        self.assertEqual(tb.tfmot_prune_count(sparsity, n), expected)
        self.assertLessEqual(abs(expected - masks.prune_count(sparsity, n)), 1)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "1.5"):
            tb.tfmot_prune_count(1.5, 10)
        with self.assertRaisesRegex(ValueError, "n 0"):
            tb.tfmot_prune_count(0.5, 0)


class FineTuneTest(parameterized.TestCase):

    @pytest.fixture(autouse=True)
    def _data(self, small_fashion):
        (x_train, y_train), (x_test, y_test) = small_fashion
        self.x, self.y = x_train[:TRAIN], y_train[:TRAIN]
        self.test = (x_test, y_test)

    def _lenet(self, seed=0):
        keras.utils.set_random_seed(seed)
        return models.build("lenet_300_100")

    @pytest.mark.slow
    def test_first_batch_is_step_one_and_its_forward_pass_sees_the_mask(self):
        # The semantics the module docstring states, on TF-MOT itself: batch 0 -> pruning_step 1, masked forward.
        model = self._lenet()
        model.compile(loss="sparse_categorical_crossentropy")
        dense_loss = model.evaluate(self.x[:BATCH], self.y[:BATCH], batch_size=BATCH, verbose=0)
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        wrapped = sparsity_api.prune_low_magnitude(copy, pruning_schedule=tb.make_schedule("oneshot", 0.95))
        wrapped.compile(keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        seen = []
        probe = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(
            (int(wrapped.layers[1].pruning_step.numpy()), logs["loss"])))
        wrapped.fit(self.x[:BATCH], self.y[:BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0,
                    callbacks=[sparsity_api.UpdatePruningStep(), probe])
        masked_loss = wrapped.evaluate(self.x[:BATCH], self.y[:BATCH], batch_size=BATCH, verbose=0)
        self.assertEqual(seen[0][0], 1)
        self.assertAlmostEqual(seen[0][1], masked_loss, places=4)
        self.assertGreater(abs(masked_loss - dense_loss), 1e-3)

    @parameterized.named_parameters(
        ("polynomial", dict(kind="polynomial", begin_step=0, end_step=10, frequency=2)),
        ("constant", dict(kind="constant", begin_step=2, end_step=-1, frequency=4)),
        ("oneshot", dict(kind="oneshot")),
    )
    @pytest.mark.slow
    def test_reaches_target_per_layer_and_leaves_caller_model_alone(self, schedule_args):
        model = self._lenet()
        before = [w.copy() for w in model.get_weights()]
        schedule = tb.make_schedule(target_sparsity=0.8, **schedule_args)
        result = tb.prune_and_finetune(model, self.x, self.y, schedule, epochs=1, batch_size=BATCH)
        zeros = _zeros(result.model)
        for name, n in LENET_KERNELS.items():
            self.assertEqual(zeros[name], tb.tfmot_prune_count(0.8, n), name)
            self.assertLessEqual(abs(zeros[name] - round(0.8 * n)), 1, name)
        self.assertAlmostEqual(tb.achieved_sparsity(result.model)["overall"], 0.8, places=4)
        self.assertEqual([l.name for l in result.model.layers], [l.name for l in model.layers])
        self.assertEqual(result.steps, 10)
        self.assertLen(result.epoch_seconds, 1)
        self.assertIn("loss", result.history)
        _, accuracy = result.model.evaluate(*self.test, verbose=0)  # compiled and usable
        self.assertGreater(accuracy, 0.3)
        for old, new in zip(before, model.get_weights()):
            np.testing.assert_array_equal(old, new)
        self.assertEqual(sum(_zeros(model).values()), 0)

    def test_layer_list_prunes_only_those_layers(self):
        schedule = tb.make_schedule("polynomial", 0.9, 0, 10, frequency=5)
        result = tb.prune_and_finetune(self._lenet(), self.x, self.y, schedule, epochs=1, batch_size=BATCH,
                                       layers=["fc2"])
        self.assertEqual(_zeros(result.model), {"fc1": 0, "fc2": tb.tfmot_prune_count(0.9, 30000), "logits": 0})

    def test_per_layer_dict_gives_each_layer_its_own_target(self):
        schedule = tb.make_schedule("polynomial", 0.5, 0, 10, frequency=5)
        plan = {"fc1": 0.95, "logits": 0.3}
        result = tb.prune_and_finetune(self._lenet(), self.x, self.y, schedule, epochs=1, batch_size=BATCH,
                                       layers=plan)
        self.assertEqual(_zeros(result.model), {"fc1": tb.tfmot_prune_count(0.95, LENET_KERNELS["fc1"]), "fc2": 0,
                                                "logits": tb.tfmot_prune_count(0.3, LENET_KERNELS["logits"])})

    @parameterized.named_parameters(
        ("not_a_kernel_layer", dict(layers=["flatten"]), "'flatten'"),
        ("unknown_layer", dict(layers=["fc9"]), "'fc9'"),
        ("empty_selection", dict(layers=[]), "no layer selected"),
        ("bad_layers_type", dict(layers="fc1"), "'fc1'"),
        ("bad_layer_sparsity", dict(layers={"fc1": 1.0}), "'fc1'"),
        ("zero_epochs", dict(epochs=0), "epochs 0"),
        ("zero_learning_rate", dict(learning_rate=0.0), "learning_rate 0.0"),
        ("not_a_schedule", dict(schedule=0.5), "0.5"),
    )
    def test_bad_arguments(self, overrides, fragment):
        kwargs = dict(schedule=tb.make_schedule("oneshot", 0.5), epochs=1, batch_size=BATCH)
        kwargs.update(overrides)
        with self.assertRaisesRegex(ValueError, fragment):
            tb.prune_and_finetune(self._lenet(), self.x[:BATCH], self.y[:BATCH], **kwargs)

    def test_rejects_tfprune_prunable_model(self):
        with self.assertRaisesRegex(ValueError, "tfprune.strip"):
            tb.prune_and_finetune(pruning.make_prunable(self._lenet()), self.x[:BATCH], self.y[:BATCH],
                                  tb.make_schedule("oneshot", 0.5), epochs=1, batch_size=BATCH)

    @pytest.mark.slow
    def test_pruning_summaries_write_events(self):
        log_dir = self.create_tempdir().full_path
        schedule = tb.make_schedule("constant", 0.5, 1, -1, frequency=5)
        tb.prune_and_finetune(self._lenet(), self.x, self.y, schedule, epochs=2, batch_size=BATCH,
                              log_dir=log_dir)
        events = glob.glob(os.path.join(log_dir, "metrics", "events.out.tfevents.*"))
        self.assertNotEmpty(events)
        tags = {v.tag for path in events for e in tf.compat.v1.train.summary_iterator(path) for v in e.summary.value}
        self.assertTrue(any(t.endswith("/sparsity") and "fc1" in t for t in tags), tags)

    @pytest.mark.slow
    def test_runs_under_a_distribution_strategy(self):
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        schedule = tb.make_schedule("polynomial", 0.7, 0, 10, frequency=5)
        result = tb.prune_and_finetune(self._lenet(), self.x, self.y, schedule, epochs=1, batch_size=BATCH,
                                       strategy=strategy, layers=["fc1", "fc2"])
        self.assertEqual(_zeros(result.model), {"fc1": tb.tfmot_prune_count(0.7, LENET_KERNELS["fc1"]),
                                                "fc2": tb.tfmot_prune_count(0.7, LENET_KERNELS["fc2"]), "logits": 0})
        result.model.evaluate(*self.test, verbose=0)

    def test_warns_when_training_ends_before_the_target(self):
        schedule = tb.make_schedule("polynomial", 0.8, 0, 40, frequency=5)  # 10 steps of a 40-step ramp
        with self.assertLogs("absl", level="WARNING") as logs:
            result = tb.prune_and_finetune(self._lenet(), self.x, self.y, schedule, epochs=1, batch_size=BATCH)
        self.assertIn("not reached", "\n".join(logs.output))
        self.assertLess(tb.achieved_sparsity(result.model)["overall"], 0.8 * 0.7)


class AchievedSparsityTest(parameterized.TestCase):

    def test_counts_zero_kernel_weights_of_a_plain_model(self):
        model = models.build("lenet_300_100")
        kernel, bias = model.get_layer("fc2").get_weights()
        kernel.ravel()[:7500] = 0.0
        model.get_layer("fc2").set_weights([kernel, bias])
        sparsity = tb.achieved_sparsity(model)
        self.assertEqual(sparsity["fc2"], 0.25)
        self.assertEqual(sparsity["fc1"], 0.0)
        self.assertAlmostEqual(sparsity["overall"], 7500 / sum(LENET_KERNELS.values()))
