"""Sweep results on disk: one JSON file per finished point, written atomically, read back strictly.

Layout of an output dir::

    points/<method>-k<k>.json   one ``PointRecord`` per finished (method, k) point; the unit of resume and sharding
    <prefix>.csv / .json / .md  the merged tables, rewritten after every point (``tfprune.experiments.results.tables``)

A killed sweep loses at most the point in flight; resuming skips the points whose file holds a valid record of the
same settings and data (``finished_point``), and computes the others again. Shards write disjoint
point files (into one shared dir or several); ``load_points`` merges any number of dirs.
"""

import contextlib
import glob
import hashlib
import json
import os

from tfprune.files import io_utils
from tfprune.files import locks
from tfprune.experiments.results import records
from tfprune.experiments.config import ConfigError

POINTS = "points"
LOCK_FILE = ".tfprune.lock"  # in an output dir: held while a run writes into it
METHOD_ORDER = ("weight", "unit", "block_1x4", "block_1x16", "nm_2x4", "nm_1x4", "group", "group_mean", "group_max",
                "tfmot", "tfmot_block_1x4", "tfmot_block_1x16", "tfmot_nm_2x4")


class ResultStore:
    """Reads and writes the point records of one output dir."""

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.points_dir = os.path.join(output_dir, POINTS)

    def path(self, method, k):
        return os.path.join(self.points_dir, records.point_key(method, k) + ".json")

    def has(self, method, k):
        return os.path.isfile(self.path(method, k))

    def write_point(self, record):
        """Writes one finished ``PointRecord`` atomically (temp file, fsync, rename)."""
        io_utils.write_json_atomic(self.path(record.method, record.k), record.to_json())

    def records(self):
        return load_points([self.output_dir])


def read_point(path):
    """The ``PointRecord`` in one point file, whose name must be the record's own (``weight-k90.json``).

    Raises:
      RecordError: naming the file, when it is not valid JSON, not a valid record, or holds another point than
        its name says (never skipped silently).
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise records.RecordError(f"{path}: unreadable point record ({type(e).__name__}: {e})") from None
    record = records.PointRecord.from_json(obj, path)
    stem = os.path.basename(path)[:-len(".json")]
    if record.key != stem:
        raise records.RecordError(f"{path}: holds point {record.key}, not the {stem} its name says")
    return record


def finished_point(path, config_digest):
    """Whether the point file at ``path`` is a finished point of the run whose settings digest is
    ``config_digest``: ``(True, None)``, ``(False, None)`` when there is no file, or ``(False, problem)`` when the
    file is unreadable, empty, truncated, names another point, or was made with other settings or data (the
    problem says which; the point is then computed again)."""
    if not os.path.isfile(path):
        return False, None
    try:
        record = read_point(path)
    except records.RecordError as e:
        return False, str(e)
    if record.config_digest != config_digest:
        return False, (f"{path}: made with other settings or data (settings digest {record.config_digest}, this "
                       f"run {config_digest})")
    return True, None


def read_json(path):
    """The JSON object in ``path``.

    Raises:
      RecordError: naming the file, when it is unreadable, not JSON, or not an object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise records.RecordError(f"{path}: unreadable ({type(e).__name__}: {e}); remove it or use another "
                                  "folder") from None
    if not isinstance(obj, dict):
        raise records.RecordError(f"{path}: holds a JSON {type(obj).__name__}, not an object")
    return obj


def config_digest(fields):
    """A short digest of a run's result-defining settings (``check_same_config``'s fields): stored in every point,
    so that a point file copied in from another run is recognised and computed again."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _difference(name, old, new):
    if name == "data_sha256":
        return (f"the data: digest {old!r} there, {new!r} now (another dataset file, --data_dir or --train_size "
                "subset)" if old else "the data: not recorded there (a folder written before tfprune named its data)")
    if name == "gzip_level" and (old is None) != (new is None):
        return ("gzip sizes: measured there (resume with --gzip_size)" if old is not None else
                "gzip sizes: not measured there (resume without --gzip_size)")
    if name == "search":
        return f"{_run_kind(old)} there, {_run_kind(new)} now"
    return f"--{name}: {old!r} there, {new!r} now"


def _run_kind(search):
    """What wrote a folder, from its ``search`` setting: a budget search (fit_budget) or a sweep."""
    return "a budget search (fit_budget)" if search == "fit_budget" else "a sweep"


def check_same_config(output_dir, fields):
    """Records the result-defining settings ``fields`` in ``sweep_config.json``; refuses to add points made with
    others (the data's digest and the model file's digest included, so other data under the same dataset name, or
    another model saved under the same file name, is refused).

    A folder that holds no point file yet (a run that stopped before its first point, e.g. in baseline training)
    has nothing to mix with: its sweep_config.json is simply replaced, so a corrected rerun is never refused.

    Returns:
      None when ``output_dir`` may take the points (sweep_config.json written if absent), else the message of the
      refusal (the caller raises it, once every worker of a cluster knows).

    Raises:
      RecordError: sweep_config.json exists, the folder holds points, and the file is not readable JSON (the
        message names it).
    """
    path = os.path.join(output_dir, "sweep_config.json")
    has_points = bool(glob.glob(os.path.join(output_dir, POINTS, "*.json")))
    if os.path.isfile(path) and has_points:
        old = read_json(path)
        changed = [_difference(n, old.get(n), v) for n, v in fields.items() if old.get(n) != v]
        if changed:
            return (f"--output_dir {output_dir!r} holds {_run_kind(old.get('search'))} made with other settings ("
                    + "; ".join(changed)
                    + "); use another folder")
    elif not os.path.isfile(path) or read_json_or_none(path) != fields:
        io_utils.write_json_atomic(path, fields)
    return None


def read_json_or_none(path):
    """``read_json(path)``, or None when the file is damaged."""
    try:
        return read_json(path)
    except records.RecordError:
        return None


@contextlib.contextmanager
def output_lock(output_dir):
    """Holds ``output_dir``'s lock (``<output_dir>/.tfprune.lock``, the folder created if need be) for the ``with``
    block: a second run into the same folder is refused, naming the first.

    Raises:
      ConfigError: another process holds the folder.
    """
    os.makedirs(output_dir, exist_ok=True)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locks.exclusive(os.path.join(output_dir, LOCK_FILE)))
        except locks.LockHeld as e:
            raise ConfigError(f"--output_dir {output_dir!r} is in use by another tfprune run "
                              f"({locks.describe(e.holder)}); wait for it to finish or use another folder") from None
        yield


def sort_records(points):
    """Records ordered by method (weight, unit, tfmot, then others by name), then k."""
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(points, key=lambda r: (order.get(r.method, len(order)), r.method, r.k))


def load_points(output_dirs):
    """All point records found in ``output_dirs`` (later dirs win on the same key), sorted by method then k.

    Raises:
      RecordError: naming the file, when a point file is unreadable or not a valid record.
    """
    merged = {}
    for folder in output_dirs:
        for path in sorted(glob.glob(os.path.join(folder, POINTS, "*.json"))):
            record = read_point(path)
            merged[record.key] = record
    return sort_records(merged.values())


__all__ = ["LOCK_FILE", "METHOD_ORDER", "POINTS", "ResultStore", "check_same_config", "config_digest",
           "finished_point", "load_points", "output_lock", "read_json", "read_point", "sort_records"]
