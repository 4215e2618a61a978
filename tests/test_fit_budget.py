"""Search to a device budget (issue 18): the pure walk and choice, a tiny search end to end on real images, a
search killed mid-way and resumed, an impossible budget, and the command line's errors."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import FASHION_DIR, REPO, error_lines, require
from tfprune import tflite
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments.budget import frontier as frontier_lib
from tfprune.experiments.results import store
from tfprune.experiments.config import BaselineConfig, ConfigError, FineTune
from tfprune.experiments.budget.fit import BudgetError, FitBudgetConfig, run_fit_budget


def _candidate(name, accuracy, kib, ms):
    return frontier_lib.Candidate(name, "unit", 90.0, "int8", "shrunk", accuracy, int(kib * 1024), ms)


# ------------------------------------------------------------------------------------------------ pure part

@pytest.mark.parametrize("kwargs, message", [
    ({}, "no budget given"), ({"max_size_kib": 0}, "max_size_kib 0 must be a finite number > 0"),
    ({"max_latency_ms": float("nan")}, "max_latency_ms nan"), ({"min_accuracy": 101}, "at most 100")])
def test_a_bad_budget_is_one_error_naming_it(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        budget_lib.Budget(**kwargs)


def test_the_walk_finds_the_boundary_from_either_side():
    fits_from = 94.0  # a cost budget met from k = 94 up
    for start in range(len(budget_lib.LADDER)):
        probed = []

        def probe(k):
            probed.append(k)
            return k >= fits_from
        seen = budget_lib.walk(probe, start, prefer_lower=True)
        assert seen[94.0] and not seen[92.0], start  # both sides of the boundary measured
        assert len(probed) == len(set(probed)), start  # never a k twice
        boundary = budget_lib.LADDER.index(94.0)
        assert len(probed) == max(2, abs(start - boundary) + (1 if start <= boundary else 2)), start
    # An accuracy floor: ok below k = 90, the walk looks for the largest such k.
    seen = budget_lib.walk(lambda k: k <= 90.0, budget_lib.LADDER.index(50.0), prefer_lower=False)
    assert seen[90.0] and not seen[92.0] and max(k for k, ok in seen.items() if ok) == 90.0
    # Nothing fits: the walk climbs to the end of the ladder and stops.
    assert set(budget_lib.walk(lambda k: False, 0, prefer_lower=True)) == set(budget_lib.LADDER)


def test_the_choice_is_the_most_accurate_fit_or_under_a_floor_the_smallest():
    items = [_candidate("a", 0.90, 300, 0.01), _candidate("b", 0.88, 90, 0.01), _candidate("c", 0.87, 40, 0.01),
             _candidate("d", 0.89, 101, 0.01)]
    assert budget_lib.choose(items, budget_lib.Budget(max_size_kib=100)).name == "b"
    assert budget_lib.choose(items, budget_lib.Budget(max_size_kib=100, min_accuracy=88.5)) is None
    # b misses the accuracy floor by 0.6 % of it, d the size limit by 1 %: b is the closest.
    assert budget_lib.closest(items, budget_lib.Budget(max_size_kib=100, min_accuracy=88.5)).name == "b"
    assert budget_lib.choose(items, budget_lib.Budget(min_accuracy=87.5)).name == "b"  # smallest >= 87.5 %
    assert budget_lib.start_index(lambda k: k >= 95.0) == budget_lib.LADDER.index(95.0)
    assert budget_lib.start_index(lambda k: False) == len(budget_lib.LADDER) - 1


# ------------------------------------------------------------------------------------------------ searches

def _config(out, budget, **kwargs):
    require(FASHION_DIR)
    base = BaselineConfig(dataset="fashion_mnist", data_dir=FASHION_DIR, model="lenet_300_100", train_epochs=1,
                          train_size=600, verbose=0)
    return FitBudgetConfig(str(out), budget, base, families=("unit", "block_1x16"), ladder=(80.0, 95.0),
                           finetune=FineTune(epochs=1, verbose=0), shrunk_epochs=1, eval_size=200, **kwargs)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "b100"
    return run_fit_budget(_config(out, budget_lib.Budget(max_size_kib=100)), report=lambda line: None)


@pytest.mark.slow
def test_a_tiny_search_ships_the_most_accurate_file_that_fits(searched):
    budget = budget_lib.Budget(max_size_kib=100)
    fitting = [c for c in searched.candidates if budget.fits(c)]
    assert fitting and searched.chosen in fitting
    assert searched.chosen.accuracy == max(c.accuracy for c in fitting)
    assert any(not budget.fits(c) for c in searched.candidates)  # the dense references do not fit 100 KiB
    # The chosen file is what its card says: it runs in LiteRT at the recorded accuracy and size.
    chosen = searched.chosen_dir
    model_bytes = open(os.path.join(chosen, "model.tflite"), "rb").read()
    card = json.load(open(os.path.join(chosen, "model_card.json")))
    assert len(model_bytes) == card["size_bytes"] == searched.chosen.size_bytes <= 100 * 1024
    assert card["budget_search"]["candidate"] == searched.chosen.name
    assert open(os.path.join(chosen, "labels.txt")).read().split("\n")[0] == "T-shirt/top"
    x, y = _eval_images(card["eval_images"])
    assert tflite.evaluate_tflite(model_bytes, x, y)["accuracy"] == pytest.approx(card["accuracy"], abs=1e-9)
    # candidates.md lists every file once, the chosen one marked; frontier.png is a real PNG of them.
    table = open(os.path.join(searched.output_dir, "candidates.md")).read()
    assert all(f"| {c.name} | {100 * c.accuracy:.2f} |" in table for c in searched.candidates)
    assert table.count("**chosen**") == 1 and f"| {searched.chosen.name} |" in table
    assert open(os.path.join(searched.output_dir, "frontier.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plotted = {name: (x_, acc) for name, x_, acc in searched.plotted["size"]}
    assert set(plotted) == {c.name for c in searched.candidates}
    for c in searched.candidates:
        assert plotted[c.name] == pytest.approx((c.size_bytes / 1024, 100 * c.accuracy))


def _eval_images(n):
    from tfprune.experiments.data import builtin as data  # pylint: disable=g-import-not-at-top
    (_, _), (x_test, y_test) = data.load_dataset("fashion_mnist", FASHION_DIR, download=False)
    from tfprune.experiments.data.dataset import ArraySplit  # pylint: disable=g-import-not-at-top
    return ArraySplit(x_test, y_test).take(n, 0)


class Killed(Exception):
    pass


@pytest.mark.slow
def test_a_killed_search_resumes_losing_only_the_probe_in_flight(searched, tmp_path):
    out = tmp_path / "b100"
    started = []

    def kill_at_third(event, method, k):
        if event == "start":
            started.append((method, k))
            if len(started) == 3:
                raise Killed()
    with pytest.raises(Killed):
        run_fit_budget(_config(out, budget_lib.Budget(max_size_kib=100)), report=lambda line: None,
                       on_probe=kill_at_third)
    finished = {p.key: open(os.path.join(out, "points", p.key + ".json")).read()
                for p in store.load_points([str(out)])}
    assert len(finished) == 2  # the probe in flight is lost, nothing else
    with pytest.raises(ConfigError, match="already holds 2 probes .* pass --resume"):
        run_fit_budget(_config(out, budget_lib.Budget(max_size_kib=100)), report=lambda line: None)
    rerun = []
    result = run_fit_budget(_config(out, budget_lib.Budget(max_size_kib=100), resume=True), report=lambda line: None,
                            on_probe=lambda event, m, k: rerun.append((m, k)) if event == "start" else None)
    assert started[2] in rerun and not set(rerun) & {started[0], started[1]}
    for key, text in finished.items():  # the finished probes were read back, not recomputed
        assert open(os.path.join(out, "points", key + ".json")).read() == text
    assert {c.name for c in result.candidates} == {c.name for c in searched.candidates}  # the same walk
    assert budget_lib.Budget(max_size_kib=100).fits(result.chosen)


@pytest.mark.slow
def test_an_impossible_budget_is_one_line_naming_the_closest_candidate(searched, tmp_path):
    out = tmp_path / "b1"
    shutil.copytree(searched.output_dir, out)  # its probes are reused; the walk adds the k = 95 ones
    with pytest.raises(BudgetError) as error:
        run_fit_budget(_config(out, budget_lib.Budget(max_size_kib=1), resume=True), report=lambda line: None)
    message = str(error.value)
    assert message.startswith("no candidate meets the budget (file <= 1 KiB) after ")
    closest = min(store.load_points([str(out)]), key=lambda p: min(e.size_bytes for e in p.exports))
    assert f"the closest is {closest.method} k=" in message and "candidates.md" in message
    assert not os.path.exists(out / "chosen")  # the copy of another budget's choice is gone; its file is not
    assert os.path.isfile(os.path.join(searched.output_dir, "chosen", "model.tflite"))
    folder = re.search(r"\((/[^)]*/candidates/[^)]+)\)", message).group(1)
    assert os.path.isfile(os.path.join(folder, "model.tflite"))


@pytest.mark.slow
def test_the_command_line_refuses_a_search_without_a_budget(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tfprune.fit_budget", f"--output_dir={tmp_path / 'x'}"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr)[-1].endswith("error: no budget given: set --max_size_kib, --max_latency_ms "
                                                 "and/or --min_accuracy")
    assert not os.path.exists(tmp_path / "x")
