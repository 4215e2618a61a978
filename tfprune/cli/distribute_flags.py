"""Flags of ``tf.distribute``: ``--distribution_strategy``, ``--num_gpus``, ``--cpu_devices``, ``--threads``.

Validators reject, before any work: ``--num_gpus`` > 1 without ``mirrored`` (``off``/``one_device`` use one
device, ``multi_worker_mirrored`` every local GPU); ``--cpu_devices`` > 1 without ``mirrored`` or with GPUs (only
``mirrored`` replicates over logical CPUs, and only when it uses no GPU).
"""

from absl import app
from absl import flags

from tfprune import distribute

FLAGS = flags.FLAGS

flags.DEFINE_enum("distribution_strategy", "off", list(distribute.STRATEGY_NAMES),
                  "tf.distribute strategy: 'off' (none), 'one_device', 'mirrored' (the first --num_gpus GPUs, or "
                  "every logical CPU when 0), 'multi_worker_mirrored' (cluster from the TF_CONFIG environment "
                  "variable; every worker runs the same command, only the chief writes --output_dir). The "
                  "model, its masks and the pruning callback all run in the strategy's scope; --batch_size is "
                  "the global batch, split across replicas.")
flags.DEFINE_integer("num_gpus", 0, "GPUs to use (0: CPU only).", lower_bound=0)
flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into this many logical devices before TensorFlow starts, "
                     "so that --distribution_strategy=mirrored replicates without GPUs (for trying it out and "
                     "for tests; it does not add compute).", lower_bound=1)
flags.DEFINE_integer("threads", 0, "CPU threads TensorFlow may use within and across ops (0: its default, "
                     "every core). 1 gives steadier timings on a shared machine, and lets shards run side by "
                     "side on one machine.", lower_bound=0)
flags.register_multi_flags_validator(
    ["distribution_strategy", "num_gpus"], lambda f: f["num_gpus"] <= 1 or f["distribution_strategy"] == "mirrored",
    message="--num_gpus > 1 needs --distribution_strategy=mirrored (off/one_device use one device; "
            "multi_worker_mirrored uses every local GPU)")
flags.register_multi_flags_validator(
    ["distribution_strategy", "num_gpus", "cpu_devices"],
    lambda f: f["cpu_devices"] == 1 or (f["distribution_strategy"] == "mirrored" and f["num_gpus"] == 0),
    message="--cpu_devices > 1 needs --distribution_strategy=mirrored and --num_gpus=0 (only the mirrored "
            "strategy replicates over logical CPUs)")


def make_strategy():
    """The ``tf.distribute`` strategy of ``--distribution_strategy``, ``--num_gpus`` and ``--cpu_devices``, after
    applying ``--threads``.

    Call it once, after flag parsing and before anything runs a TensorFlow op (it splits the CPU into logical
    devices, and a multi-worker strategy must exist before the first op).

    Raises:
      app.UsageError: naming the problem (more GPUs than visible, malformed TF_CONFIG, ...).
    """
    try:
        distribute.set_threads(FLAGS.threads)
        distribute.split_cpu(FLAGS.cpu_devices)
        return distribute.get_strategy(FLAGS.distribution_strategy, FLAGS.num_gpus)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
