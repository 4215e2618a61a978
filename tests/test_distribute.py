"""tfprune.distribute: strategy names, flags, replica checks; pruning under Mirrored and MultiWorkerMirrored.

The distributed scenarios run in fresh processes (tests/distribute_worker.py): splitting the CPU into two logical
devices, or joining a multi-worker cluster, must happen before TensorFlow initializes, which this process did.
"""

import json
import os
import sys
import types

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver, parameterized

from tfprune import distribute, pruning
from tfprune.select import masks
from tfprune.layers import registry
from tfprune.experiments import models
from tfprune._env import keras, tf

from conftest import FASHION_DIR, REPO, cluster_envs, log_tails, require, run_processes, worker_env

WORKER = os.path.join(REPO, "tests", "distribute_worker.py")
TIMEOUT = 55  # seconds, per scenario


def _run_workers(scenario, out_paths, envs, train_size):
    """Runs one distribute_worker.py process per output path (at once, within TIMEOUT); returns their JSON results."""
    commands = [[sys.executable, WORKER, scenario, str(out), FASHION_DIR, str(train_size)] for out in out_paths]
    logs = [f"{out}.log" for out in out_paths]
    codes = run_processes(commands, logs, envs, TIMEOUT, f"{scenario} workers")
    if any(codes):
        pytest.fail(f"{scenario} workers exited {codes}:\n" + log_tails(logs))
    results = []
    for out in out_paths:
        with open(out, encoding="utf-8") as f:
            results.append(json.load(f))
    return results


def _model(pruned=0.5):
    keras.utils.set_random_seed(0)
    model = pruning.make_prunable(models.build("lenet_300_100"))
    return pruning.prune(model, pruned) if pruned else model


class GetStrategyTest(parameterized.TestCase):

    def test_off_is_the_default_strategy(self):
        strategy = distribute.get_strategy("off")
        self.assertIs(strategy, tf.distribute.get_strategy())
        self.assertEqual(strategy.num_replicas_in_sync, 1)

    def test_one_device_on_cpu(self):
        strategy = distribute.get_strategy("ONE_DEVICE")
        self.assertIsInstance(strategy, tf.distribute.OneDeviceStrategy)
        self.assertIn("CPU:0", strategy.extended.worker_devices[0])

    def test_mirrored_without_gpus_uses_every_logical_cpu(self):
        strategy = distribute.get_strategy("mirrored", num_gpus=0)
        self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
        self.assertEqual(strategy.num_replicas_in_sync, len(tf.config.list_logical_devices("CPU")))

    @parameterized.named_parameters(
        ("unknown_name", dict(name="tpu"), "'tpu'"),
        ("not_a_string", dict(name=None), "None"),
        ("negative_gpus", dict(name="mirrored", num_gpus=-1), "-1"),
        ("float_gpus", dict(name="mirrored", num_gpus=1.5), "1.5"),
        ("off_with_two_gpus", dict(name="off", num_gpus=2), "num_gpus 2"),
        ("one_device_with_two_gpus", dict(name="one_device", num_gpus=2), "num_gpus 2"),
        ("bad_mirrored_all_reduce", dict(name="mirrored", all_reduce_alg="ring"), "'ring'"),
        ("bad_collective_all_reduce", dict(name="multi_worker_mirrored", all_reduce_alg="hierarchical_copy"),
         "'hierarchical_copy'"),
    )
    def test_bad_arguments_raise_naming_the_value(self, kwargs, named):
        with self.assertRaisesRegex(ValueError, named):
            distribute.get_strategy(**kwargs)

    def test_more_gpus_than_visible_raises(self):
        visible = len(tf.config.list_logical_devices("GPU"))
        with self.assertRaisesRegex(ValueError, f"num_gpus {visible + 1} .* {visible} visible"):
            distribute.get_strategy("mirrored", num_gpus=visible + 1)

    @parameterized.named_parameters(
        ("not_json", "{worker", "TF_CONFIG '{worker' is not valid JSON"),
        ("no_task", '{"cluster": {"worker": ["a:1"]}}', "must be a JSON object with 'cluster' and 'task' keys"),
        ("empty", "", "TF_CONFIG is set but empty; it must hold the cluster and this worker's task as JSON, e.g. "
                      'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}'),
        ("blank", " \n", "TF_CONFIG is set but empty"),
        ("no_hosts", '{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
         "must map each job (worker, chief) to a non-empty list of 'host:port' addresses"),
        ("other_job", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
         "its type 'ps' is not a job of the cluster ('worker')"),
        ("index_past_end", '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
         "task index 2 is not in [0, 2)"))
    def test_malformed_tf_config_raises_before_any_cluster_setup(self, tf_config, message):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TF_CONFIG", tf_config)
            with self.assertRaises(ValueError) as e:
                distribute.get_strategy("multi_worker_mirrored")
        self.assertIn(message, str(e.exception))


    @parameterized.named_parameters(("off", "off"), ("one_device", "one_device"), ("mirrored", "mirrored"))
    def test_a_single_process_is_the_chief(self, name):
        self.assertTrue(distribute.is_chief(distribute.get_strategy(name)))

    @parameterized.named_parameters(
        ("worker0_without_chief", {"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ("worker1", {"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ("worker0_with_chief", {"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
        ("chief", {"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
    )
    def test_chief_of_a_cluster(self, cluster, task_type, task_id, chief):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        self.assertEqual(distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)), chief)


class FlagsTest(parameterized.TestCase):

    def test_flags_are_defined_once_by_the_command_line_and_parse(self):
        from tfprune.cli import distribute_flags  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
        self.assertIn("distribution_strategy", [f.name for f in flags.FLAGS.flags_by_module_dict()[
            "tfprune.cli.distribute_flags"]])
        self.assertEqual(flags.FLAGS["distribution_strategy"].default, "off")
        # Flag by flag: a whole-command parse would also run the validators of other mains' required flags.
        with flagsaver.flagsaver():
            flags.FLAGS["distribution_strategy"].parse("multi_worker_mirrored")
            flags.FLAGS["num_gpus"].parse("2")
            self.assertEqual((flags.FLAGS.distribution_strategy, flags.FLAGS.num_gpus), ("multi_worker_mirrored", 2))
        self.assertEqual((flags.FLAGS.distribution_strategy, flags.FLAGS.num_gpus), ("off", 0))
        with self.assertRaises(flags.IllegalFlagValueError):
            flags.FLAGS["distribution_strategy"].parse("parameter_server")
        with self.assertRaises(flags.IllegalFlagValueError):
            flags.FLAGS["num_gpus"].parse("-1")


class ReplicaChecksTest(parameterized.TestCase):
    """Single-replica (default strategy) behaviour; the multi-replica cases run in the worker scenarios below."""

    def test_replica_values_of_a_plain_variable(self):
        variable = tf.Variable([[1.0, 2.0]])
        values = distribute.replica_values(tf.distribute.get_strategy(), variable)
        self.assertLen(values, 1)
        np.testing.assert_array_equal(values[0], [[1.0, 2.0]])

    def test_check_masks_in_sync_counts_pruned_weights(self):
        model = _model(0.5)
        pruned = distribute.check_masks_in_sync(model, tf.distribute.get_strategy())
        self.assertEqual(pruned, {l.name: masks.prune_count(0.5, l.kernel_mask.size)
                                  for l in model.layers if registry.is_prunable(l)})

    def test_check_masks_in_sync_sees_a_nonzero_pruned_weight(self):
        model = _model(0.5)
        layer = model.get_layer("fc2")
        kernel = layer.kernel.numpy()
        kernel[tuple(np.argwhere(layer.kernel_mask == 0)[0])] = np.inf
        layer.kernel.assign(kernel)  # inf * 0 = NaN: the pruned weight is no longer 0 in the forward pass
        with self.assertRaisesRegex(distribute.ReplicaMismatchError, "'fc2': 1 pruned weights are nonzero"):
            distribute.check_masks_in_sync(model, tf.distribute.get_strategy())

    def test_check_masks_in_sync_needs_prunable_layers(self):
        with self.assertRaisesRegex(ValueError, "no prunable layer"):
            distribute.check_masks_in_sync(models.build("lenet_300_100"), tf.distribute.get_strategy())

    def test_mask_digest_follows_the_masks(self):
        a, b = _model(0.5), _model(0.5)
        self.assertEqual(distribute.mask_digest(a), distribute.mask_digest(b))
        pruning.prune(b, 0.6)
        self.assertNotEqual(distribute.mask_digest(a), distribute.mask_digest(b))


def _check_rank_pruning_result(result, replicas, local_replicas):
    assert result["replicas"] == replicas
    assert result["local_replicas"] == local_replicas
    assert [s for s, _ in result["updates"]] == [4, 8, 12, 16]
    assert result["updates"][-1][1] == pytest.approx(0.8)
    # Exact count floor(s*n + 1/2) on every layer, on every replica, and in the stripped (exported) model.
    assert result["pruned"] == result["expected"]
    for name, expected in result["expected"].items():
        assert result["mask_zeros"][f"{name}/kernel_mask:0"] == [expected] * local_replicas
    assert result["stripped_zeros"] == result["expected"]
    assert np.isfinite(result["loss"])


@pytest.mark.slow
def test_rank_pruning_under_mirrored_strategy(tmp_path):
    require(FASHION_DIR)
    (result,) = _run_workers("mirrored", [tmp_path / "mirrored.json"], [worker_env()], 2000)
    _check_rank_pruning_result(result, replicas=2, local_replicas=2)
    assert [d.split("/")[-1] for d in result["devices"]] == ["device:CPU:0", "device:CPU:1"]
    # The check reports a mask flipped on one replica, and a pruned weight that turned nonzero on one replica.
    tampered_mask, tampered_kernel, restored = result["tamper_errors"]
    assert "fc2/kernel_mask:0 on replica 1 differs from replica 0 in 1 entries" in tampered_mask
    assert "1 pruned weights are nonzero on replica 1" in tampered_kernel
    assert restored is None


@pytest.mark.slow
def test_rank_pruning_under_multi_worker_mirrored_strategy(tmp_path):
    require(FASHION_DIR)
    results = _run_workers("multi_worker", [tmp_path / f"worker{i}.json" for i in range(2)], cluster_envs(2), 2000)
    assert [r["task"] for r in results] == [0, 1]
    assert [r["is_chief"] for r in results] == [True, False]
    for r in results:
        _check_rank_pruning_result(r, replicas=2, local_replicas=1)
    # Both workers end with the same masks, the same weights and the same loss.
    assert results[0]["mask_digest"] == results[1]["mask_digest"]
    assert results[0]["weights_digest"] == results[1]["weights_digest"]
    assert results[0]["loss"] == results[1]["loss"]


@pytest.mark.slow
def test_tfmot_baseline_under_mirrored_strategy(tmp_path):
    require(FASHION_DIR)
    (result,) = _run_workers("tfmot", [tmp_path / "tfmot.json"], [worker_env()], 2000)
    assert result["replicas"] == 2 and result["local_replicas"] == 2
    assert result["steps"] == 20
    assert result["kernels_in_sync"]
    for name, expected in result["expected"].items():
        assert result["kernel_zeros"][name] == [expected, expected]
