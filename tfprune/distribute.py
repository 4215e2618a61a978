"""``tf.distribute`` strategies for pruning and fine-tuning, and checks that replicas hold the same masks.

Strategy names follow the TensorFlow Model Garden flag convention (``official/common/distribute_utils``):
``off``, ``one_device``, ``mirrored``, ``multi_worker_mirrored``. Build the model, ``make_prunable`` it and
compile it inside ``strategy.scope()``; ``RankPruning`` then sets the masks in the callback (cross-replica
context), which writes the same values to every replica's copy, so all replicas keep identical masks and a
pruned weight computes as 0 on every replica.
"""

import contextlib
import hashlib
import json
import os

import numpy as np

from tfprune.layers import registry
from tfprune._env import tf

STRATEGY_NAMES = ("off", "one_device", "mirrored", "multi_worker_mirrored")
MIRRORED_ALL_REDUCE = ("nccl", "hierarchical_copy")
MULTI_WORKER_ALL_REDUCE = ("ring", "nccl")


class ReplicaMismatchError(RuntimeError):
    """Replicas of a distributed model disagree on a mask or weight, or a pruned weight is nonzero on one."""


def _check_num_gpus(num_gpus):
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, (int, np.integer)) or num_gpus < 0:
        raise ValueError(f"num_gpus {num_gpus!r} must be an integer >= 0")
    return int(num_gpus)


def _gpu_devices(num_gpus):
    visible = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus > len(visible):
        raise ValueError(f"num_gpus {num_gpus} asks for more GPUs than the {len(visible)} visible here")
    return visible[:num_gpus]


def _mirrored_cross_device_ops(all_reduce_alg):
    if all_reduce_alg is None:
        return None
    if all_reduce_alg == "nccl":
        return tf.distribute.NcclAllReduce()
    if all_reduce_alg == "hierarchical_copy":
        return tf.distribute.HierarchicalCopyAllReduce()
    raise ValueError(f"all_reduce_alg {all_reduce_alg!r} is not one of {MIRRORED_ALL_REDUCE} (or None) for the "
                     "mirrored strategy")


def _collective_options(all_reduce_alg):
    implementations = {None: tf.distribute.experimental.CommunicationImplementation.AUTO,
                       "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                       "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
    if all_reduce_alg not in implementations:
        raise ValueError(f"all_reduce_alg {all_reduce_alg!r} is not one of {MULTI_WORKER_ALL_REDUCE} (or None) for "
                         "the multi_worker_mirrored strategy")
    return tf.distribute.experimental.CommunicationOptions(implementation=implementations[all_reduce_alg])


TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


def _check_tf_config():
    """ValueError naming TF_CONFIG and what it must hold, unless it is unset (one local worker) or a cluster and
    this worker's task in it (``TF_CONFIG_EXAMPLE``)."""
    raw = os.environ.get("TF_CONFIG")
    if raw is None:
        return
    want = (f"it must hold the cluster and this worker's task as JSON, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' "
            "(unset it to run one local worker)")
    if not raw.strip():
        raise ValueError(f"TF_CONFIG is set but empty; {want}")
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"TF_CONFIG {raw!r} is not valid JSON ({e}); {want}") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError(f"TF_CONFIG {raw!r} must be a JSON object with 'cluster' and 'task' keys; {want}")
    cluster, task = config["cluster"], config["task"]
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(hosts, list) and hosts and all(isinstance(h, str) for h in hosts) for hosts in cluster.values()):
        raise ValueError(f"TF_CONFIG cluster {cluster!r} must map each job (worker, chief) to a non-empty list of "
                         f"'host:port' addresses; {want}")
    kind = task.get("type") if isinstance(task, dict) else None
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG task {task!r}: its type {kind!r} is not a job of the cluster "
                         f"({', '.join(map(repr, cluster))}); {want}")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task index {index!r} is not in [0, {len(cluster[kind])}) (the cluster's "
                         f"{kind!r} job has {len(cluster[kind])} addresses); {want}")


def get_strategy(name="off", num_gpus=0, all_reduce_alg=None):
    """Returns the ``tf.distribute.Strategy`` for a ``--distribution_strategy`` name (Model Garden semantics).

    Args:
      name: one of ``STRATEGY_NAMES`` (case-insensitive):
        ``"off"``: the default strategy (``tf.distribute.get_strategy()``, no distribution);
        ``"one_device"``: ``OneDeviceStrategy`` on ``/gpu:0`` when ``num_gpus`` is 1, else ``/cpu:0``;
        ``"mirrored"``: ``MirroredStrategy`` over the first ``num_gpus`` GPUs, or over every visible logical CPU
        device when ``num_gpus`` is 0 (one replica per device);
        ``"multi_worker_mirrored"``: ``MultiWorkerMirroredStrategy``; the cluster and this worker's index come
        from the ``TF_CONFIG`` environment variable (single local worker when it is unset). It must be created at
        program start, before TensorFlow runs any op.
      num_gpus: GPUs to use (>= 0); at most 1 for ``off``/``one_device``. Ignored by ``multi_worker_mirrored``,
        which uses every local GPU.
      all_reduce_alg: None (TensorFlow picks), ``"nccl"`` or ``"hierarchical_copy"`` for ``mirrored``,
        ``"ring"`` or ``"nccl"`` for ``multi_worker_mirrored``; ignored by the single-device strategies.

    Returns:
      a ``tf.distribute.Strategy``; ``strategy.num_replicas_in_sync`` replicas split each global batch.

    Raises:
      ValueError: naming the value: unknown name, ``num_gpus`` negative or not an int, more than one GPU for a
      single-device strategy, more GPUs than visible, unknown ``all_reduce_alg``, malformed ``TF_CONFIG``.
    """
    num_gpus = _check_num_gpus(num_gpus)
    key = name.lower() if isinstance(name, str) else name
    if key not in STRATEGY_NAMES:
        raise ValueError(f"distribution strategy {name!r} is not one of {', '.join(STRATEGY_NAMES)}")
    if key in ("off", "one_device") and num_gpus > 1:
        raise ValueError(f"num_gpus {num_gpus} needs distribution strategy 'mirrored'; {key!r} uses one device")
    if key == "off":
        return tf.distribute.get_strategy()
    if key == "multi_worker_mirrored":
        options = _collective_options(all_reduce_alg)  # validate everything before TensorFlow sets up collectives
        _check_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if key == "one_device":
        return tf.distribute.OneDeviceStrategy(_gpu_devices(1)[0] if num_gpus else "/cpu:0")
    cross_device_ops = _mirrored_cross_device_ops(all_reduce_alg)
    devices = _gpu_devices(num_gpus) if num_gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=cross_device_ops)


def set_threads(threads):
    """Limits TensorFlow to ``threads`` CPU threads within each op and across ops (0 leaves its default).

    Must run before TensorFlow initializes its runtime (before any op).

    Raises:
      ValueError: ``threads`` not an integer >= 0.
      RuntimeError: TensorFlow's, when its runtime is already initialized.
    """
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads {threads!r} must be an integer >= 0")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))


def split_cpu(devices):
    """Splits the first physical CPU into ``devices`` logical devices (``mirrored`` then has one replica on each).

    Must run before TensorFlow initializes its devices (before any op); ``devices`` 1 changes nothing.

    Raises:
      ValueError: ``devices`` not an integer >= 1.
      RuntimeError: TensorFlow's, when its devices are already initialized.
    """
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"cpu devices {devices!r} must be an integer >= 1")
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(devices))


def scope(strategy):
    """``strategy.scope()``, or a context that does nothing when ``strategy`` is None."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def describe(strategy):
    """``{"distribution_strategy": name, "replicas": replicas in sync}`` for records (None: ``off``, 1).

    ``name`` is the ``--distribution_strategy`` value that builds such a strategy (``STRATEGY_NAMES``); the default
    strategy is ``off``; any other strategy is named by its class.
    """
    if strategy is None:
        return {"distribution_strategy": "off", "replicas": 1}
    for name, cls in (("multi_worker_mirrored", tf.distribute.MultiWorkerMirroredStrategy),
                      ("mirrored", tf.distribute.MirroredStrategy), ("one_device", tf.distribute.OneDeviceStrategy)):
        if isinstance(strategy, cls):
            break
    else:
        name = "off" if strategy is tf.distribute.get_strategy() else type(strategy).__name__
    return {"distribution_strategy": name, "replicas": int(strategy.num_replicas_in_sync)}


def in_cluster(strategy):
    """True when ``strategy`` spans a cluster of worker processes (``multi_worker_mirrored`` from TF_CONFIG)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and resolver.task_type is not None


def is_chief(strategy):
    """True in the one process that should write results: always, except on the non-chief workers of a cluster.

    With a multi-worker strategy the chief is task ``chief``, or worker 0 when the cluster has no ``chief`` task.
    Every worker must still run the training itself (collectives wait for all of them).
    """
    if not in_cluster(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def any_worker(strategy, flags):
    """Per entry of ``flags`` (bools), True when it is True on any worker of ``strategy``'s cluster.

    An all-reduce: in a cluster every worker must call it, in the same order, with as many flags. Outside a cluster
    (None, a single-process strategy) it returns ``flags`` unchanged. It lets workers take one decision from facts
    that only some of them see: what the chief's output dir holds, whether every worker has a cached model.

    Returns:
      list of bool, as long as ``flags``.
    """
    local = np.asarray(flags, dtype=bool).reshape(-1)
    if strategy is None or not in_cluster(strategy) or not local.size:
        return [bool(v) for v in local]
    values = tf.constant(local.astype(np.float32))
    total = tf.function(lambda: strategy.reduce(tf.distribute.ReduceOp.SUM,
                                                strategy.run(lambda: tf.identity(values)), axis=None))()
    return [bool(v) for v in total.numpy() > 0]


def all_workers(strategy, flag):
    """True when ``flag`` is True on every worker of ``strategy``'s cluster (an all-reduce, like ``any_worker``)."""
    return not any_worker(strategy, [not flag])[0]


def replica_values(strategy, variable):
    """Per-replica values of a variable on this worker, as a list of numpy arrays (one per local replica).

    A mirrored variable gives one array per replica device; a plain variable or tensor gives a list of one.
    """
    return [np.asarray(v.numpy()) for v in strategy.experimental_local_results(variable)]


def _first_mismatch(arrays):
    """(replica, differing entries) of the first array unlike ``arrays[0]`` (mirrored: same shapes), or None."""
    for i, a in enumerate(arrays[1:], start=1):
        if not np.array_equal(a, arrays[0]):
            return i, int(np.count_nonzero(a != arrays[0]))
    return None


def _masked_variables_per_replica(strategy, layers):
    """[layer][replica] -> [(variable, mask)] as that replica holds them (``layer.variable_masks()`` read on it),
    numpy."""
    def values_and_masks():
        return [[(tf.identity(v), tf.identity(m)) for v, m in l.variable_masks()] for l in layers]
    per_replica = tf.function(lambda: strategy.run(values_and_masks))()
    out = []
    for pairs in per_replica:
        local = [(strategy.experimental_local_results(v), strategy.experimental_local_results(m)) for v, m in pairs]
        replicas = len(local[0][0]) if local else 0
        out.append([[(np.asarray(v[r]), np.asarray(m[r])) for v, m in local] for r in range(replicas)])
    return out


def check_masks_in_sync(model, strategy, check_weights=True):
    """Checks every prunable layer of ``model`` holds the same masks on all replicas of ``strategy`` (this worker).

    Checked per prunable layer: its mask variables (``mask_variables()``) are equal on every replica; the kernel each
    replica holds (each of ``layer.variable_masks()`` read on that replica) is exactly 0 wherever its mask is 0;
    with ``check_weights``, its other weights (kernel, bias...) are also equal on every replica (the replicas compute
    the same function).

    Returns:
      {layer name: pruned kernel weights (mask zeros)}, in model order, the same on every replica.

    Raises:
      ReplicaMismatchError: naming the layer, the variable and the first replica that differs from replica 0, or
      the replica where a pruned weight is nonzero.
      ValueError: a model without prunable layers.
    """
    layers = [l for l in registry.model_layers(model) if registry.is_prunable(l)]
    if not layers:
        raise ValueError(f"model {model.name!r} has no prunable layer (call tfprune.make_prunable(model) first)")
    pruned = {}
    for layer in layers:
        variables = layer.mask_variables()
        if check_weights:
            masks = registry.mask_weight_ids(layer)
            variables += [w for w in layer.weights if id(w) not in masks]
        for variable in variables:
            mismatch = _first_mismatch(replica_values(strategy, variable))
            if mismatch is not None:
                raise ReplicaMismatchError(f"layer {layer.name!r}: {variable.name} on replica {mismatch[0]} differs "
                                           f"from replica 0 in {mismatch[1]} entries")
    for layer, per_replica in zip(layers, _masked_variables_per_replica(strategy, layers)):
        for replica, pairs in enumerate(per_replica):
            alive = sum(int(np.count_nonzero(value[mask == 0])) for value, mask in pairs)
            if alive:
                raise ReplicaMismatchError(f"layer {layer.name!r}: {alive} pruned weights are nonzero on replica "
                                           f"{replica}")
        mask = layer.kernel_mask
        pruned[layer.name] = int(mask.size - np.count_nonzero(mask))
    return pruned


def mask_digest(model):
    """SHA-256 hex digest of every prunable layer's name and masks (this process's first replica), in model order.

    Equal digests mean equal masks: workers of a multi-worker run can log it and compare.
    """
    digest = hashlib.sha256()
    for layer in registry.model_layers(model):
        if registry.is_prunable(layer):
            digest.update(layer.name.encode())
            for variable in layer.mask_variables():
                digest.update(np.ascontiguousarray(variable.numpy(), np.float32).tobytes())
    return digest.hexdigest()


__all__ = ["MIRRORED_ALL_REDUCE", "MULTI_WORKER_ALL_REDUCE", "STRATEGY_NAMES", "ReplicaMismatchError",
           "all_workers", "any_worker", "check_masks_in_sync", "describe", "get_strategy",
           "in_cluster", "is_chief", "mask_digest", "replica_values", "scope", "set_threads", "split_cpu"]
