"""A user's own trained model as the sweep's baseline: loaded safely, checked before any pruning work.

Loading never runs code from the model file unless the caller allows it (``allow_unsafe=True``, the CLI's
``--allow_unsafe_deserialization``):

- ``.keras`` (zip): the config is inspected first, then loaded with Keras ``safe_mode=True``. The inspection is
  needed because tf_keras' safe mode refuses only Python lambdas: it still imports any module a config names
  (module top-level code runs) and rebuilds ``TFOpLambda`` layers calling any TensorFlow function.
- ``.h5`` (legacy HDF5): Keras has no ``safe_mode`` for it, so the ``model_config`` JSON is inspected the same way
  and the file is loaded inside ``SafeModeScope(True)``.
- A SavedModel folder holds TensorFlow graphs that run as saved, which no Keras safe mode covers: it is refused
  unless ``allow_unsafe``. Re-save it as ``.keras`` where it is trusted.

Refused without ``allow_unsafe``: ``Lambda`` layers (Python code), serialized Python lambdas, ``TFOpLambda`` layers
calling anything but element-wise math, nn and shape ops (``SAFE_TF_OPS``), and any class or function whose module
is not Keras, tfprune or TF-MOT (``TRUSTED_MODULES``). Errors are ``UnsafeModelError`` / ``ModelFileError``, both
ValueErrors whose message starts with the path.
"""

import dataclasses
import hashlib
import json
import os
import zipfile

import numpy as np

from tfprune.structure import graph
from tfprune.files import io_utils
from tfprune import outputs
from tfprune.layers import registry
from tfprune import stacks
from tfprune._env import keras

TRUSTED_MODULES = ("keras", "tf_keras", "tfprune", "tensorflow_model_optimization")
SAFE_TF_OPS = ("math.", "nn.", "__operators__.", "linalg.")
SAFE_TF_FUNCTIONS = frozenset(("reshape", "concat", "stack", "expand_dims", "squeeze", "transpose", "cast",
                               "identity", "clip_by_value", "where", "shape", "compat.v1.shape", "split", "gather",
                               "pad", "tile", "ones_like", "zeros_like", "reduce_sum", "reduce_mean", "reduce_max"))
KERAS_FORMATS = (".keras", ".h5", ".hdf5")
UNSAFE_HINT = "pass --allow_unsafe_deserialization (allow_unsafe=True) only if you trust the file"


class ModelFileError(ValueError):
    """A model file is missing, truncated, corrupt or of an unknown format; the message starts with its path."""


class UnsafeModelError(ValueError):
    """A model file holds something that could run code when loaded; the message names it and the way out."""


def _module_trusted(module):
    return module == "builtins" or any(module == m or module.startswith(m + ".") for m in TRUSTED_MODULES)


def _tf_op_safe(function):
    return function in SAFE_TF_FUNCTIONS or function.startswith(SAFE_TF_OPS)


def unsafe_entries(config):
    """What in a Keras model config could run code when it is deserialized.

    Args:
      config: the parsed JSON of a ``.keras`` ``config.json`` or an ``.h5`` ``model_config`` (nested dicts/lists).

    Returns:
      list of strings, one per offending entry (empty when the config is safe), e.g.
      ``"layer 'scale' is a Lambda layer with a Python `lambda` inside"``.
    """
    found = []

    def walk(node, layer):
        if isinstance(node, list):
            for item in node:
                walk(item, layer)
            return
        if not isinstance(node, dict):
            return
        if "class_name" in node:
            cls, inner = node.get("class_name"), node.get("config")
            name = inner.get("name", layer) if isinstance(inner, dict) else layer
            module = node.get("module")
            if cls == "Lambda":
                kind = inner.get("function_type") if isinstance(inner, dict) else None
                found.append(f"layer {name!r} is a Lambda layer with a Python `lambda` inside" if kind == "lambda"
                             else f"layer {name!r} is a Lambda layer (it calls Python code)")
                return
            if cls == "__lambda__":
                found.append(f"{name!r} holds a serialized Python `lambda`")
                return
            if cls in ("TFOpLambda", "SlicingOpLambda") and isinstance(inner, dict):
                function = str(inner.get("function", ""))
                if not _tf_op_safe(function):
                    found.append(f"layer {name!r} calls TensorFlow function tf.{function}, not a math/nn/shape op")
            if isinstance(module, str) and not _module_trusted(module):
                found.append(f"{name!r} ({cls}) names module {module!r}, which loading would import")
                return
            layer = name
        for key, value in node.items():
            if key != "compile_config":  # never deserialized: models are loaded with compile=False
                walk(value, layer)

    walk(config, None)
    return found


def _read_config(path, kind):
    """The model config JSON inside a ``.keras`` zip or an ``.h5`` file."""
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as archive:
                text = archive.read("config.json")
        else:
            import h5py  # pylint: disable=g-import-not-at-top
            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
            if text is None:
                raise ModelFileError(f"{path}: an HDF5 file without a model config (a weights-only file? "
                                     "save the whole model with model.save)")
        return json.loads(text)
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path}: cannot read the model config ({type(e).__name__}: {_short(e)}); "
                             "the file is truncated or corrupt") from None


def model_format(path):
    """``"keras"``, ``"h5"`` or ``"savedmodel"``, from the path and the file's first bytes.

    Raises:
      ModelFileError: missing path, or a file that is not a zip ``.keras`` or an HDF5 file.
    """
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ModelFileError(f"{path}: a folder without saved_model.pb, not a SavedModel")
        return "savedmodel"
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    if not path.endswith(KERAS_FORMATS):
        raise ModelFileError(f"{path}: unknown model format; expected a .keras or .h5 file or a SavedModel folder")
    import h5py  # pylint: disable=g-import-not-at-top
    if path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ModelFileError(f"{path}: not a valid .keras archive (zip); the file is truncated or corrupt")
        return "keras"
    if not h5py.is_hdf5(path):
        raise ModelFileError(f"{path}: not an HDF5 file; the file is truncated or corrupt")
    return "h5"


class UnsupportedKerasError(ModelFileError):
    """A model file written by a Keras version tfprune does not read (neither Keras 2 / tf_keras nor Keras 3)."""


def keras_version(path, kind=None):
    """The Keras version that wrote a ``.keras`` or ``.h5`` file (``"2.21.0"``, ``"3.15.1"``), or None when the
    file does not say (a SavedModel folder, an old ``.h5``).

    ``.keras`` archives name it in ``metadata.json``, ``.h5`` files in their root ``keras_version`` attribute; the
    model config cannot tell the two stacks apart (both say ``"module": "keras"``).
    """
    kind = kind or model_format(path)
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" not in archive.namelist():
                    return None
                version = json.loads(archive.read("metadata.json")).get("keras_version")
        elif kind == "h5":
            import h5py  # pylint: disable=g-import-not-at-top
            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
        else:
            return None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path}: cannot read the model config ({type(e).__name__}: {_short(e)}); the file "
                             "is truncated or corrupt") from None
    return version.decode() if isinstance(version, bytes) else version


def file_stack(path, kind=None):
    """The ``stacks.Stack`` to load a model file with: Keras 3 for files Keras 3 wrote, tf_keras for Keras 2 ones
    (and for files that do not name their version: SavedModel folders, old ``.h5``).

    Raises:
      UnsupportedKerasError: the file names another major version (one line naming it).
    """
    version = keras_version(path, kind)
    major = str(version).split(".", 1)[0] if version else "2"
    if major not in stacks.VERSIONS:
        raise UnsupportedKerasError(f"{path}: written by Keras {version}; tfprune reads files of Keras 2 (tf_keras "
                                    "2.x) and Keras 3")
    return stacks.VERSIONS[major]


def _short(error, limit=300):
    text = str(error).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _load(path, kind, allow_unsafe, stack):
    if stack is stacks.KERAS3:
        # Keras 3's safe mode covers .keras and .h5 (Lambda bytecode, outside modules are never imported); tfprune's
        # Keras 3 layers are registered serializables, found once this package is imported.
        return stacks.KERAS3.load_model(path, compile=False, safe_mode=not allow_unsafe)
    from tf_keras.src.saving import serialization_lib  # pylint: disable=g-import-not-at-top
    kwargs = {"safe_mode": not allow_unsafe} if kind == "keras" else {}

    def load():
        return keras.models.load_model(path, custom_objects=registry.custom_objects(), compile=False, **kwargs)

    with serialization_lib.SafeModeScope(not allow_unsafe):
        try:
            return load()
        except (TypeError, ValueError) as e:
            if "PruneLowMagnitude" not in str(e):
                raise
        import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
        with tfmot.sparsity.keras.prune_scope():
            return load()


def load_user_model(path, allow_unsafe=False):
    """Loads a saved Keras model (``.keras``, ``.h5``, or with ``allow_unsafe`` a SavedModel folder), uncompiled,
    with the Keras that wrote it: Keras 3 files as Keras 3 models, Keras 2 (tf_keras) files as tf_keras models.

    tfprune's prunable layers and TF-MOT's pruning wrappers load as well.

    Raises:
      ModelFileError: missing, truncated or corrupt file, unknown format, or a class Keras cannot rebuild (the
        message starts with the path and carries Keras' reason).
      UnsafeModelError: without ``allow_unsafe``, a SavedModel folder or a config listed by ``unsafe_entries``.
      UnsupportedKerasError: a file of another Keras major version.
    """
    path = os.fspath(path)
    kind = model_format(path)
    stack = file_stack(path, kind)  # an unsupported version is one clear line, before anything is read
    if not allow_unsafe:
        if kind == "savedmodel":
            raise UnsafeModelError(f"{path}: a SavedModel folder holds TensorFlow graphs that run as saved, which "
                                   f"Keras safe mode does not cover; re-save it as .keras, or {UNSAFE_HINT}")
        problems = unsafe_entries(_read_config(path, kind))
        if problems:
            raise UnsafeModelError(f"{path}: refused to load: {'; '.join(problems)}; loading it could run "
                                   f"arbitrary code; {UNSAFE_HINT}")
    try:
        model = _load(path, kind, allow_unsafe, stack)
    except ModelFileError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path}: cannot load the model ({type(e).__name__}: {_short(e)})") from None
    if not stacks.is_model(model):
        raise ModelFileError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model


def file_digest(path):
    """SHA-256 hex digest of a model file (of every file, in sorted order, for a folder)."""
    digest = hashlib.sha256()
    paths = [path] if os.path.isfile(path) else sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    for p in paths:
        digest.update(os.path.relpath(p, path).encode())
        io_utils.hash_file(digest, p)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class PrunableCheck:
    """Outcome of ``check_prunable``: the layers tfprune prunes, and the layers left dense with the reason."""
    prunable: tuple
    skipped: dict


def check_prunable(model):
    """Checks that tfprune can prune ``model`` as a whole, before any work.

    Layers tfprune does not prune (custom layer classes, subclasses of its kinds such as Conv2DTranspose, grouped
    convolutions, BatchNormalization...) are a documented skip: they stay dense and are listed in ``skipped``.

    Returns:
      ``PrunableCheck(prunable=(names of the layers pruned), skipped={name: reason})``.

    Raises:
      ValueError: naming the problem: not a Keras model; a subclassed Model; a nested Model or a TF-MOT wrapper
        (whose inner kernels tfprune would silently miss); a layer used at several call sites (shared weights:
        one mask would serve several places, which unit pruning and shrinking cannot honour); NaN/inf in a
        weight (naming the layer and the weight); no layer of a kind tfprune prunes.
    """
    graph.check_graph_model(model, "prunes")
    prunable, skipped = [], {}
    for layer in model.layers:
        if stacks.is_model(layer):
            raise ValueError(f"layer {layer.name!r} of model {model.name!r} is a nested Model "
                             f"({type(layer).__name__}); its layers would not be pruned: flatten it into one model")
        if registry.is_tfmot_wrapper(layer):
            raise ValueError(f"layer {layer.name!r} is a TF-MOT PruneLowMagnitude wrapper; strip it first "
                             "(tfmot.sparsity.keras.strip_pruning) and save the plain model")
        sites = graph.call_count(model, layer)
        if sites > 1 and layer.weights:
            raise ValueError(f"layer {layer.name!r} is shared: model {model.name!r} calls it at {sites} places; "
                             "tfprune needs one call site per pruned layer (give each place its own layer)")
        for weight in layer.weights:
            values = stacks.of(layer).to_numpy(weight)
            bad = values.size - int(np.count_nonzero(np.isfinite(values)))
            if bad:
                raise ValueError(f"layer {layer.name!r}: weight {weight.name!r} holds {bad} NaN/inf of "
                                 f"{values.size} values; the model cannot be ranked or evaluated")
        reason = registry.skip_reason(layer)
        if reason is None:
            prunable.append(layer.name)
        elif reason:
            skipped[layer.name] = reason
    if not prunable:
        kinds = ", ".join(sorted({type(l).__name__ for l in model.layers}))
        raise ValueError(f"model {model.name!r} has no layer tfprune prunes ({registry.KIND_NAMES}; layers: {kinds})")
    return PrunableCheck(tuple(prunable), skipped)


def check_compatible(model, x, num_classes):
    """Checks that ``model`` takes images shaped like ``x`` (N, ...) and returns one output per class of
    ``num_classes``, and tells what those outputs are.

    Returns:
      ``"probabilities"`` or ``"logits"`` (``tfprune.outputs.output_kind`` on ``x``): both are accepted; losses and
      accuracies are computed for what the model gives.

    Raises:
      ValueError: several inputs/outputs, another input shape, another number of classes, a multi-label (sigmoid)
        head over several classes.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "expected one of each")
    want = graph.model_input_shape(model)[1:]
    if len(want) != x.ndim - 1 or any(w is not None and w != d for w, d in zip(want, x.shape[1:])):
        raise ValueError(f"model {model.name!r} takes inputs of shape {(None,) + want}, but the data's inputs are "
                         f"{tuple(x.shape[1:])}")
    classes = graph.model_output_shape(model)[-1]
    if classes != num_classes:
        raise ValueError(f"model {model.name!r} has {classes} outputs, but the dataset has {num_classes} classes")
    if classes > 1 and outputs.last_activation(model) == "sigmoid":
        raise ValueError(f"model {model.name!r} ends in a sigmoid over its {classes} outputs: independent per-class "
                         "scores (multi-label), not one class per image, so no loss tfprune trains with fits them; "
                         "end it in a softmax, or drop the activation (its outputs are then logits)")
    return outputs.output_kind(model, x[:16])
