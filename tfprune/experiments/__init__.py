"""The study harness: reference models and data, trained baselines, and sweeps, comparisons with TF-MOT and
sensitivity scans as plain Python functions (no absl flag is defined or read here).

    from tfprune.experiments import BaselineConfig, SweepConfig, run_sweep
    base = BaselineConfig(dataset="fashion_mnist", model="lenet_300_100", train_epochs=1, train_size=5000)
    result = run_sweep(SweepConfig("runs/smoke", base, sparsities=(0, 50, 90)))
    print(result.markdown)

Modules: ``config`` (frozen config dataclasses), ``data``, ``models``, ``baseline``, ``point`` (one sweep point),
``tfmot_method``, ``records`` (typed point records), ``store`` (point files), ``tables``, ``plots``,
``point_export``, ``sweep``, ``compare``, ``sensitivity``, ``budget``/``budget_export``/``fit_budget`` (search to a
device budget). Depends on the pruning library and ``tfprune.tflite``,
never on ``tfprune.cli``.
"""

from tfprune.experiments.budget import Budget
from tfprune.experiments.compare import COMPARE, compare_config, run_compare
from tfprune.experiments.config import BaselineConfig, ConfigError, FineTune, SensitivityConfig, SweepConfig
from tfprune.experiments.fit_budget import BudgetError, FitBudgetConfig, FitBudgetResult, run_fit_budget
from tfprune.experiments.records import PointRecord, RecordError, ShrinkFigures, VariantFigures
from tfprune.experiments.sensitivity import SensitivityResult, load_plan, run_sensitivity
from tfprune.experiments.store import load_points
from tfprune.experiments.sweep import SWEEP, SweepResult, merge, run_sweep

__all__ = [
    "BaselineConfig", "Budget", "BudgetError", "COMPARE", "ConfigError", "FineTune", "FitBudgetConfig",
    "FitBudgetResult", "PointRecord", "RecordError", "SWEEP", "SensitivityConfig", "SensitivityResult",
    "ShrinkFigures", "SweepConfig", "SweepResult", "VariantFigures", "compare_config", "load_plan", "load_points",
    "merge", "run_compare", "run_fit_budget", "run_sensitivity", "run_sweep",
]
