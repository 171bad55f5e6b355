"""The package layering the design states: ``trainers/`` uses callbacks only through their
protocol (the base class and its record types) and the defaults Lightning also adds;
``callbacks/`` never imports ``trainers/`` at run time; either imports first."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys

import pytest

from jno_flax.callbacks import Callback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: what trainers/ may import from callbacks/: the protocol and Lightning's default callbacks
PROTOCOL = {"Callback", "ChunkMetrics", "StepMetrics", "InGraph", "StateUpdate", "Logger"}
DEFAULTS = {"TensorBoardLogger", "ProgressBar", "ModelSummary", "Timer", "ModelCheckpoint",
            "EarlyStopping", "TrackerCallback", "AdaptiveWeightsCallback"}


def _runtime_imports(path: str) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from jno_flax... import name`` outside
    ``if TYPE_CHECKING:`` blocks (imports inside functions included)."""
    tree = ast.parse(open(path).read())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in skipped and node.module:
            out += [(node.module, a.name) for a in node.names]
    return out


def _files(folder: str) -> list[str]:
    d = os.path.join(ROOT, folder)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".py"))


@pytest.mark.parametrize("path", _files("trainers"), ids=os.path.basename)
def test_trainers_use_callbacks_only_through_their_protocol(path):
    for module, name in _runtime_imports(path):
        if not module.startswith("jno_flax.callbacks"):
            continue
        value = getattr(importlib.import_module(module), name)
        assert isinstance(value, type), f"{path}: imports {module}.{name}, not a class"
        if issubclass(value, Callback) and name not in PROTOCOL:
            assert name in DEFAULTS, f"{path}: imports the callback {name}"
        else:
            assert name in PROTOCOL, f"{path}: imports {module}.{name}"


@pytest.mark.parametrize("path", _files("callbacks"), ids=os.path.basename)
def test_callbacks_do_not_import_trainers_at_run_time(path):
    found = [m for m, _ in _runtime_imports(path) if m.startswith("jno_flax.trainers")]
    assert not found, f"{path} imports {found} at run time"


@pytest.mark.parametrize("first", ["jno_flax.callbacks", "jno_flax.trainers",
                                   "jno_flax._checkpoint_format"])
def test_each_package_imports_first(first):
    subprocess.run([sys.executable, "-c", f"import {first}"], check=True, cwd=ROOT,
                   env={**os.environ, "JAX_PLATFORMS": "cpu"})


#: what the wings may use of the core: shared utilities (and, for ``jno_flax.nn``, the model
#: adapter ``wrap`` it re-exports)
UTILITIES = {"jno_flax._checks", "jno_flax._dtypes", "jno_flax._seed", "jno_flax._warnings",
             "jno_flax._trees"}
WINGS = {"geometry": UTILITIES, "nn": UTILITIES | {"jno_flax._trainable"}}
#: the core modules that use the geometry wing (its public names and geometry classes)
GEOMETRY_USERS = {"domain.py", "functions.py", "__init__.py"}


def _module_level_imports(path: str) -> list[str]:
    """The ``jno_flax`` modules ``path`` imports when it is loaded (top-level statements)."""
    out = []
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "jno_flax"):
            out += [f"{node.module}.{a.name}" if node.module == "jno_flax" else node.module
                    for a in node.names]
    return out


@pytest.mark.parametrize("wing", sorted(WINGS))
def test_a_wing_uses_only_the_cores_utilities(wing):
    files = _files(os.path.join("jno_flax", wing))
    assert len(files) >= 4, files
    for path in files:
        for module in _module_level_imports(path):
            assert module.startswith(f"jno_flax.{wing}") or module in WINGS[wing], \
                f"{path} imports {module}"


def test_the_core_uses_the_wings_only_at_its_edges():
    """No cycle between the expression core and a wing: the core's modules do not import
    ``jno_flax.nn``, and only the domains (and the function families' ranges) import
    ``jno_flax.geometry``; the flat core stays small."""
    core = _files("jno_flax")
    assert len(core) <= 26, [os.path.basename(f) for f in core]
    for path in core:
        for module in _module_level_imports(path):
            name = os.path.basename(path)
            if name != "__init__.py":
                assert not module.startswith("jno_flax.nn"), f"{path} imports {module}"
            if module.startswith("jno_flax.geometry"):
                assert name in GEOMETRY_USERS, f"{path} imports {module}"
