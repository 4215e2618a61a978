"""The package's layers hold: imports point one way (cli -> experiments -> tflite -> library), only the command line
reads or defines absl flags, no import cycle, small modules."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = os.path.join(REPO, "tfprune")
ENTRY_SHIMS = {"tfprune.sweep", "tfprune.compare", "tfprune.sensitivity", "tfprune.export_main", "tfprune.train_main",
               "tfprune.fit_budget", "tfprune.check_nm_main"}
# Which layers each layer may import. The facade (tfprune/__init__.py) is the public API over all but the CLI.
ALLOWED = {
    "library": {"library"},
    "tflite": {"library", "tflite"},
    "experiments": {"library", "tflite", "experiments"},
    "cli": {"library", "tflite", "experiments", "cli"},
    "facade": {"library", "tflite", "experiments"},
    "shim": {"cli"},
}
MAX_LINES = 400
MAX_TOP_LEVEL_MODULES = 16
# The pruning library's own tiers (docs/ARCHITECTURE.md): a unit (a sub-package, or a module at the top of the package)
# imports only units of its own tier or a lower one, so each tier can be read knowing only those below it.
LIBRARY_TIERS = [
    {"tfprune._env", "tfprune._version", "tfprune._startup", "tfprune.stacks"},  # the two Keras stacks
    {"tfprune.structure"},  # Keras graphs, knowing nothing of pruning
    {"tfprune.layers"},  # prunable layers and the registry
    {"tfprune.select", "tfprune.outputs", "tfprune.distribute"},  # methods, masks, groups; logits; strategies
    {"tfprune.calibration", "tfprune.pruning", "tfprune.files"},  # statistics, reconstruction; make_prunable/prune/
    # strip/report; model files, atomic writes, locks
    {"tfprune.shrinking", "tfprune.callbacks", "tfprune.quantization"},  # shrinking; schedules; QAT
]


def _modules():
    """{module name: path} of every module of the package."""
    found = {}
    for root, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer(module):
    if module in ENTRY_SHIMS:
        return "shim"
    if module == "tfprune":
        return "facade"
    part = module.split(".")[1]
    return part if part in ("cli", "experiments", "tflite") else "library"


def _imports(path):
    """Every tfprune module a file imports (at any depth: top level or inside functions): ``from A import b`` counts
    as importing module ``A.b`` when there is one, else ``A``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES:
            out.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names)
    return out


IMPORTS = {m: _imports(p) - {m} for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert {layer(m) for m in MODULES} == set(ALLOWED)
    assert {m for m in MODULES if layer(m) == "library"} >= {"tfprune.layers.registry", "tfprune.structure.graph",
                                                             "tfprune.select.scoring"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    # Importing the package's own namespace (``import tfprune``, ``from tfprune import __version__``) would pull in
    # every layer below the CLI: only the CLI may.
    wrong = sorted(i for i in IMPORTS[module] if layer(i) not in ALLOWED[layer(module)])
    assert not wrong, f"{module} ({layer(module)}) imports {wrong}"


def unit(module):
    """The library unit of a module: its sub-package (``tfprune.layers``) or, at the top, the module itself."""
    return ".".join(module.split(".")[:2])


def tier(module):
    return next(i for i, units in enumerate(LIBRARY_TIERS) if unit(module) in units)


def test_every_library_module_has_a_tier():
    library = {unit(m) for m in MODULES if layer(m) == "library"}
    assert library == set().union(*LIBRARY_TIERS)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "library"))
def test_library_tiers_point_down(module):
    up = sorted(i for i in IMPORTS[module] if layer(i) == "library" and tier(i) > tier(module))
    assert not up, f"{module} (tier {tier(module)}) imports {up} of a higher tier"


def test_the_top_level_stays_small_and_every_sub_package_says_what_it_owns():
    top = sorted(n for n in os.listdir(PACKAGE) if n.endswith(".py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at the top of tfprune/: {top}"
    packages = sorted(m for m, p in MODULES.items() if p.endswith("__init__.py") and m != "tfprune")
    assert len(packages) >= 8
    for name in packages:
        tree = ast.parse(open(MODULES[name], encoding="utf-8").read())
        doc = ast.get_docstring(tree) or ""
        assert len(doc.split()) >= 15, f"{name} has no docstring saying what it owns"


def test_no_import_cycle():
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(IMPORTS[module]):
            if target in ENTRY_SHIMS:
                continue
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(path + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) != "cli"))
def test_only_the_command_line_uses_absl_flags(module):
    text = open(MODULES[module], encoding="utf-8").read()
    tree = ast.parse(text)
    uses = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "absl"
            and any(a.name == "flags" for a in n.names)]
    uses += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "FLAGS"]
    assert not uses, f"{module} uses absl flags (lines {uses})"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    with open(MODULES[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_lines_stay_within_120_characters(module):
    with open(MODULES[module], encoding="utf-8") as f:
        long_lines = [i for i, line in enumerate(f, 1) if len(line.rstrip("\n")) > 120]
    assert not long_lines, f"{module}: lines {long_lines} are longer than 120 characters"


@pytest.mark.slow
def test_importing_everything_outside_the_command_line_defines_no_flag():
    names = sorted(m for m in MODULES if layer(m) not in ("cli", "shim"))
    child = ("import importlib\nfrom absl import flags\n"
             f"for name in {names!r}:\n    importlib.import_module(name)\n"
             "print(sorted(m for m in flags.FLAGS.flags_by_module_dict() if m.startswith('tfprune')))\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
