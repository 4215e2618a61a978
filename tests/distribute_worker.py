"""One distributed pruning scenario in a fresh process, for tests/test_distribute.py; writes a JSON result.

Runs in its own process because the CPU must be split into logical devices (or a multi-worker strategy set up)
before TensorFlow initializes, which a pytest process has already done.

  python tests/distribute_worker.py SCENARIO OUTPUT_JSON DATA_DIR TRAIN_SIZE

SCENARIO: ``mirrored`` (MirroredStrategy over 2 logical CPUs, RankPruning on a PolynomialDecay schedule),
``tfmot`` (the TF-MOT baseline under the same strategy), ``multi_worker`` (one worker of a
MultiWorkerMirroredStrategy cluster; TF_CONFIG comes from the environment).
"""

import hashlib
import json
import os
import sys
import time

import numpy as np

from tfprune import callbacks, distribute, pruning
from tfprune.select import masks
from tfprune.layers import registry
from tfprune.experiments.data import builtin as data_lib
from tfprune.experiments import models
from tfprune.experiments import tfmot_method as tb
from tfprune._env import keras, tf

# Importing does not initialize TensorFlow's devices: each scenario configures them first thing.

BATCH_SIZE = 100
TARGET = 0.8


def _data(data_dir, train_size):
    (x, y), _ = data_lib.load_dataset("fashion_mnist", data_dir, download=False)
    return data_lib.take((x, y), train_size, 0)


def _schedule(steps):
    """PolynomialDecay 0 -> TARGET: four mask updates in the epoch's ``steps``, the last one at the target."""
    return tb.make_schedule("polynomial", TARGET, begin_step=0, end_step=steps - 4, frequency=(steps - 4) // 4)


def _weights_digest(model):
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()


def _zeros_per_replica(strategy, variables):
    return {v.name: [int(a.size - (a != 0).sum()) for a in distribute.replica_values(strategy, v)] for v in variables}


def _check_error(model, strategy, **kwargs):
    try:
        distribute.check_masks_in_sync(model, strategy, **kwargs)
    except distribute.ReplicaMismatchError as e:
        return str(e)
    return None


def _tamper_errors(model, strategy):
    """Desynchronizes replica 1 on purpose, twice: check_masks_in_sync must report each (message, or None)."""
    layer = model.get_layer("fc2")
    pruned_at = tuple(np.argwhere(layer.kernel_mask == 0)[0])
    errors = []
    revived = (layer.kernel_mask_variable, 1.0, {})  # a pruned weight revived on one replica only
    for variable, value, kwargs in (revived,
                                    (layer.kernel, float("nan"), {"check_weights": False})):  # NaN * 0 != 0
        component = strategy.experimental_local_results(variable)[1]
        saved = component.numpy()
        tampered = saved.copy()
        tampered[pruned_at] = value
        component.assign(tampered)
        errors.append(_check_error(model, strategy, **kwargs))
        component.assign(saved)
    errors.append(_check_error(model, strategy))  # restored: in sync again
    return errors


def _prune_with_rank(strategy, x, y):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = models.compile_model(pruning.make_prunable(models.build("lenet_300_100")))
    steps = len(x) // BATCH_SIZE
    pruner = callbacks.RankPruning("weight", _schedule(steps))
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=False, callbacks=[pruner])
    seconds = time.perf_counter() - start
    prunable = [l for l in model.layers if registry.is_prunable(l)]
    return model, {
        "replicas": strategy.num_replicas_in_sync,
        "local_replicas": len(strategy.experimental_local_results(prunable[0].kernel_mask_variable)),
        "updates": [[int(s), float(v)] for s, v in pruner.history],
        "pruned": distribute.check_masks_in_sync(model, strategy),
        "expected": {l.name: masks.prune_count(TARGET, l.kernel_mask.size) for l in prunable},
        "mask_zeros": _zeros_per_replica(strategy, [l.kernel_mask_variable for l in prunable]),
        "stripped_zeros": {r.name: r.zeros for r in pruning.sparsity_report(pruning.strip(model))},
        "mask_digest": distribute.mask_digest(model),
        "weights_digest": _weights_digest(model),
        "loss": float(history.history["loss"][-1]),
        "fit_seconds": seconds,
    }


def mirrored(data_dir, train_size):
    distribute.split_cpu(2)
    strategy = distribute.get_strategy("mirrored")
    x, y = _data(data_dir, train_size)
    model, result = _prune_with_rank(strategy, x, y)
    result["tamper_errors"] = _tamper_errors(model, strategy)
    result["devices"] = list(strategy.extended.worker_devices)
    return result


def multi_worker(data_dir, train_size):
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = distribute.get_strategy("multi_worker_mirrored")  # first TensorFlow call: collectives need it
    x, y = _data(data_dir, train_size)
    _, result = _prune_with_rank(strategy, x, y)
    result["task"] = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    result["is_chief"] = distribute.is_chief(strategy)
    return result


def tfmot_baseline(data_dir, train_size):
    distribute.split_cpu(2)
    strategy = distribute.get_strategy("mirrored")
    x, y = _data(data_dir, train_size)
    keras.utils.set_random_seed(0)
    baseline = models.build("lenet_300_100")
    steps = tb.steps_for(1, len(x), BATCH_SIZE)
    result = tb.prune_and_finetune(baseline, x, y, _schedule(steps), epochs=1, batch_size=BATCH_SIZE,
                                   strategy=strategy, shuffle=False)
    kernels = [l.kernel for l in registry.kernel_layers(result.model)]
    in_sync = all(all(np.array_equal(v, values[0]) for v in values)
                  for values in (distribute.replica_values(strategy, k) for k in kernels))
    return {
        "replicas": strategy.num_replicas_in_sync,
        "local_replicas": len(strategy.experimental_local_results(kernels[0])),
        "steps": result.steps,
        "kernels_in_sync": in_sync,
        "kernel_zeros": _zeros_per_replica(strategy, kernels),
        "expected": {k.name: tb.tfmot_prune_count(TARGET, k.shape.num_elements()) for k in kernels},
    }


SCENARIOS = {"mirrored": mirrored, "multi_worker": multi_worker, "tfmot": tfmot_baseline}

if __name__ == "__main__":
    scenario, output, fashion_dir, size = sys.argv[1:5]
    start = time.perf_counter()
    out = SCENARIOS[scenario](fashion_dir, int(size))
    out["seconds"] = time.perf_counter() - start
    with open(output, "w", encoding="utf-8") as f:
        json.dump(out, f)
