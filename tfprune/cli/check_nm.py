"""Checks an N:M pattern in a model file: a .keras/.h5 model's kernels or a .tflite file's decoded weights.

    python -m tfprune.check_nm_main --model_path=pruned.tflite --n=2 --m=4
    tfprune-check-nm --model_path=pruned.keras --n=2 --m=4

Every group of ``m`` consecutive inputs of one unit must hold at most ``n`` non-zeros (tfprune's ``nm_<n>x<m>``,
TF-MOT's ``sparsity_m_by_n=(m - n, m)``): a .tflite file's FULLY_CONNECTED and CONV_2D weights
(``tfprune.tflite.check_nm_tflite``: float or int8, dense or sparse-encoded), a Keras model's layers with an inputs
axis (``tfprune.check_nm``). One line per tensor; exit status 0 when every one holds it, 1 when one does not (the
lines marked VIOLATES name it and its violating groups), 2 for a usage error (a missing or unreadable file, a bad
pattern).
"""

import os

from absl import app
from absl import flags

from tfprune import pruning
from tfprune import tflite
from tfprune.cli import app as cli_app
from tfprune.cli import model_path_flags
from tfprune.files import user_model

flags.adopt_module_key_flags(model_path_flags)
N = flags.DEFINE_integer("n", 2, "Weights kept (non-zeros at most) in every group of --m consecutive inputs.",
                         lower_bound=1)
M = flags.DEFINE_integer("m", 4, "Size of a group: consecutive inputs of one unit (TFLite's innermost axis).",
                         lower_bound=2)
VIOLATION_EXIT = 1


def checks_of(path, n, m, allow_unsafe=False):
    """``[(tensor or layer name, description, NMCheck)]`` of a .tflite file or a Keras model file."""
    if path.endswith(".tflite"):
        return [(c.name, f"{c.op}, {c.dtype}, {'sparse' if c.sparse else 'dense'}", c.check)
                for c in tflite.check_nm_tflite(path, n, m)]
    model = user_model.load_user_model(path, allow_unsafe)
    return [(name, "Keras layer", check) for name, check in pruning.check_nm(model, n, m).items()]


def main(argv):
    cli_app.check_no_arguments(argv)
    path, n, m = model_path_flags.MODEL_PATH.value, N.value, M.value
    if not path:
        raise app.UsageError("--model_path is required: the .keras, .h5 or .tflite file to check")
    if not os.path.isfile(path):
        raise app.UsageError(f"--model_path {path!r}: no such file")
    if n >= m:
        raise app.UsageError(f"--n={n} --m={m}: an N:M pattern keeps 1 <= n < m weights of every m")
    try:
        checks = checks_of(path, n, m, model_path_flags.ALLOW_UNSAFE.value)
    except (ValueError, OSError) as e:  # not a model file, a weight that cannot be decoded
        raise app.UsageError(f"--model_path {path!r}: {e}") from None
    if not checks:
        raise app.UsageError(f"--model_path {path!r}: no weight with an inputs axis to check")
    bad = [name for name, _, check in checks if not check.ok]
    for name, what, check in checks:
        verdict = "ok      " if check.ok else "VIOLATES"
        print(f"{verdict} {name} ({what}, shape {check.shape}): {check.violations} of {check.groups} groups hold "
              f"more than {n} non-zeros (most: {check.max_nonzeros})")
    if bad:
        print(f"{path}: {len(bad)} of {len(checks)} tensors violate {n}:{m}: {', '.join(bad)}")
        return VIOLATION_EXIT
    print(f"{path}: all {len(checks)} tensors hold {n}:{m} ({n} of every {m} consecutive inputs kept at most)")
    return 0


def run(argv=None):
    """The ``tfprune-check-nm`` console script."""
    cli_app.run(main, argv)


if __name__ == "__main__":
    run()
