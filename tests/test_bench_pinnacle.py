"""bench/pinnacle.py runs each case alone (a smoke run of a few steps; the numbers come from
the full run, see the README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "pinnacle.py"


def _run(*args: str) -> str:
    env = dict(os.environ, JNO_BENCH_STEPS="4")
    out = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("case, extra", [
    ("poisson2d_c", ["--geometry", "mesh"]),
    pytest.param("poisson2d_c", [], marks=pytest.mark.slow),
    pytest.param("ns2d_c", [], marks=pytest.mark.slow),
    pytest.param("pnd", [], marks=pytest.mark.slow)])
def test_a_case_runs_alone_and_reports_against_the_paper(case, extra):
    pytest.importorskip("gmsh")
    out = _run(case, "--seeds", "0", *extra)
    assert re.search(rf"{case} seed 0: L2RE \d\.\d\de[-+]\d\d in \d+ s", out), out
    row = next(line for line in out.splitlines() if line.startswith(f"{case} ")
               and "PINNacle" not in line and "seed" not in line)
    assert "best" in row, out
