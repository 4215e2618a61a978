"""Sweep results on disk: one JSON file per finished point, written atomically, read back strictly.

Layout of an output dir::

    points/<method>-k<k>.json   one ``PointRecord`` per finished (method, k) point; the unit of resume and sharding
    <prefix>.csv / .json / .md  the merged tables, rewritten after every point (``tfprune.experiments.tables``)

A killed sweep loses at most the point in flight; resuming skips points whose file exists. Shards write disjoint
point files (into one shared dir or several); ``load_points`` merges any number of dirs.
"""

import glob
import json
import os

from tfprune import io_utils
from tfprune.experiments import records

POINTS = "points"
METHOD_ORDER = ("weight", "unit", "tfmot")


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
    """The ``PointRecord`` in one point file.

    Raises:
      RecordError: naming the file, when it is not valid JSON or not a valid record (never skipped silently).
    """
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise records.RecordError(f"{path}: unreadable point record ({e})") from None
    return records.PointRecord.from_json(obj, path)


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


__all__ = ["METHOD_ORDER", "POINTS", "ResultStore", "load_points", "read_point", "sort_records"]
