"""The package installs and imports without the source tree (a regular, non-editable install)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_regular_install_imports_subpackages(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(ROOT)],
                   check=True, cwd=tmp_path, capture_output=True)
    assert (target / "jno_flax" / "trainers" / "__init__.py").exists()
    assert (target / "jno_flax" / "callbacks" / "__init__.py").exists()
    assert not (target / "trainers").exists() and not (target / "callbacks").exists()
    code = ("import jno_flax, jno_flax.trainers, jno_flax.callbacks, jno_flax.numpy as jnn;"
            "assert jno_flax.np is jnn;"
            "assert 'site' in jno_flax.__file__, jno_flax.__file__;"
            "from jno_flax.trainers import Trainer; from jno_flax.callbacks import Callback;"
            "print('ok')")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
