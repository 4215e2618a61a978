"""The study harness: reference models and data, trained baselines, and sweeps, comparisons with TF-MOT and
sensitivity scans as plain Python functions (no absl flag is defined or read here).

    from tfprune.experiments import BaselineConfig, SweepConfig, run_sweep
    base = BaselineConfig(dataset="fashion_mnist", model="lenet_300_100", train_epochs=1, train_size=5000)
    result = run_sweep(SweepConfig("runs/smoke", base, sparsities=(0, 50, 90)))
    print(result.markdown)

Modules: ``config`` (frozen config dataclasses), ``models`` (reference models), ``baseline``, ``preflight``,
``point`` (one sweep point), ``point_export``, ``tfmot_method``, ``twin`` (a tf_keras twin of a Keras 3 model, for
TF-MOT), ``sweep``, ``compare``, ``sensitivity``; sub-packages ``data`` (datasets), ``results`` (records, point
files, tables, plots) and ``budget`` (search to a device budget). Depends on the pruning library and
``tfprune.tflite``, never on ``tfprune.cli``.
"""

from tfprune.experiments.budget.search import Budget
from tfprune.experiments.compare import COMPARE, compare_config, run_compare
from tfprune.experiments.config import BaselineConfig, ConfigError, FineTune, SensitivityConfig, SweepConfig
from tfprune.experiments.budget.fit import BudgetError, FitBudgetConfig, FitBudgetResult, run_fit_budget
from tfprune.experiments.results.records import PointRecord, RecordError, ShrinkFigures, VariantFigures
from tfprune.experiments.sensitivity import SensitivityResult, load_plan, run_sensitivity
from tfprune.experiments.results.store import load_points
from tfprune.experiments.sweep import SWEEP, SweepResult, merge, run_sweep

__all__ = [
    "BaselineConfig", "Budget", "BudgetError", "COMPARE", "ConfigError", "FineTune", "FitBudgetConfig",
    "FitBudgetResult", "PointRecord", "RecordError", "SWEEP", "SensitivityConfig", "SensitivityResult",
    "ShrinkFigures", "SweepConfig", "SweepResult", "VariantFigures", "compare_config", "load_plan", "load_points",
    "merge", "run_compare", "run_fit_budget", "run_sensitivity", "run_sweep",
]
