"""The numbered examples run end to end (short runs here; full length with `-m slow`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("[0-9][0-9]_*.py"))
OUTPUTS = {"01_poisson_2d.py": "runs/01_poisson_2d/poisson_2d.png",
           "04_ntk_diagnostics.py": "runs/04_ntk_diagnostics/ntk.png",
           "05_gradient_conflict.py": "runs/05_gradient_conflict/conflict.png",
           "06_adaptive_weights.py": "runs/06_adaptive_weights/weights.png",
           "07_resume.py": "runs/07_resume/resume.png",
           "08_burgers.py": "runs/08_burgers/burgers.png",
           "09_multi_process.py": "runs/09_multi_process/poisson.png",
           "10_allen_cahn.py": "runs/10_allen_cahn/allen_cahn.png",
           "11_antiderivative_operator.py":
               "runs/11_antiderivative_operator/antiderivative.png",
           "12_diffusion_reaction_operator.py":
               "runs/12_diffusion_reaction_operator/diffusion_reaction.png",
           "14_darcy_fno.py": "runs/14_darcy_fno/darcy.png",
           "13_poisson_natural_gradient.py":
               "runs/13_poisson_natural_gradient/poisson_engd.png"}


def _run(example: Path, cwd: Path, steps: int | None, timeout: int = 600) -> str:
    env = dict(os.environ)
    if steps is not None:
        env["JNO_EXAMPLE_STEPS"] = str(steps)
    out = subprocess.run([sys.executable, str(example)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


#: examples whose short run still takes long (several processes), or whose features the unit
#: tests cover (Trainer override points, diagnostics, adaptive weights); run with `-m slow`
SLOW = {"03_custom_trainer.py", "04_ntk_diagnostics.py", "05_gradient_conflict.py",
        "06_adaptive_weights.py", "07_resume.py", "08_burgers.py", "09_multi_process.py",
        "10_allen_cahn.py", "11_antiderivative_operator.py",
        "12_diffusion_reaction_operator.py", "14_darcy_fno.py",
        "13_poisson_natural_gradient.py"}   # its full run is a fast test below


@pytest.mark.parametrize("example", [pytest.param(e, marks=pytest.mark.slow) if e.name in SLOW
                                     else e for e in EXAMPLES], ids=lambda p: p.name)
def test_example_runs_briefly(example, tmp_path):
    _run(example, tmp_path, steps=300)
    if example.name in OUTPUTS:
        assert (tmp_path / OUTPUTS[example.name]).stat().st_size > 10_000


@pytest.mark.slow
def test_main_example_reaches_its_stated_accuracy(tmp_path):
    stdout = _run(EXAMPLES[0], tmp_path, steps=None)
    err = float(re.search(r"relative L2 error: ([0-9.e+-]+)", stdout).group(1))
    assert err < 2e-2, stdout
    assert any((tmp_path / "runs" / "01_poisson_2d").glob("version_*/events.out.tfevents.*"))


def test_natural_gradient_example_reaches_1e_6_in_100_iterations(tmp_path):
    example = next(e for e in EXAMPLES if e.name == "13_poisson_natural_gradient.py")
    stdout = _run(example, tmp_path, steps=None)
    err = float(re.search(r"relative L2 error ([0-9.e+-]+) after 100 engd", stdout).group(1))
    assert err < 1e-6, stdout
    assert (tmp_path / OUTPUTS[example.name]).stat().st_size > 10_000


@pytest.mark.slow
def test_inverse_example_recovers_parameters(tmp_path):
    stdout = _run(EXAMPLES[1], tmp_path, steps=None)
    err = float(re.search(r"max \|error\| = ([0-9.e+-]+)", stdout).group(1))
    assert err < 5e-3, stdout


@pytest.mark.slow
def test_burgers_example_reaches_5e_5(tmp_path):
    """Adam in float32, then SS-Broyden in float64: relative L2 error below 5e-5 (README:
    about 12 minutes)."""
    stdout = _run(EXAMPLES[7], tmp_path, steps=None, timeout=1500)
    err = float(re.search(r"relative L2 error ([0-9.e+-]+) after", stdout).group(1))
    assert err < 5e-5, stdout


def test_burgers_exact_solution_matches_brute_force_quadrature():
    """The example's Cole–Hopf solution (Gauss–Hermite) against a 2-million-point Riemann sum
    of the same integrals, and the initial condition at t = 0."""
    import importlib.util

    import numpy as np
    spec = importlib.util.spec_from_file_location("burgers_example", EXAMPLES[7])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions; trains only under __main__
    nu = 0.01 / np.pi
    eta = np.linspace(-3, 3, 2_000_001)
    for t, x in [(0.1, 0.5), (0.5, 0.01), (0.75, -0.02), (1.0, 0.3)]:
        log_w = -np.cos(np.pi * (x - eta)) / (2 * np.pi * nu) - eta**2 / (4 * nu * t)
        w = np.exp(log_w - log_w.max())
        ref = -np.sum(np.sin(np.pi * (x - eta)) * w) / np.sum(w)
        assert abs(module.exact_solution(t, x) - ref) < 1e-9
    xs = np.linspace(-1, 1, 11)
    np.testing.assert_allclose(module.exact_solution(np.zeros(11), xs), -np.sin(np.pi * xs),
                               atol=1e-12)


@pytest.mark.slow
def test_allen_cahn_example_reaches_its_stated_accuracy(tmp_path):
    """The full recipe (README: about 4e-4 in about 8 minutes on 2 CPU cores) below 1e-3
    (jaxpi's full stack: 5.8e-4)."""
    stdout = _run(next(e for e in EXAMPLES if e.name == "10_allen_cahn.py"), tmp_path,
                  steps=None, timeout=1800)
    err = float(re.search(r"relative L2 error ([0-9.e+-]+) after", stdout).group(1))
    assert err < 1e-3, stdout


def test_allen_cahn_reference_converges_well_below_the_pinn_error():
    """The example's ETDRK4 / Fourier reference: halving dt and doubling the modes change it by
    far less than the 1e-3 the PINN is measured at, and t = 0 is the initial condition."""
    import importlib.util

    import numpy as np
    path = next(e for e in EXAMPLES if e.name == "10_allen_cahn.py")
    spec = importlib.util.spec_from_file_location("allen_cahn_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions; trains only under __main__
    t = np.array([0.0, 0.5, 1.0])
    x, u = module.reference_solution(t)
    _, u_dt = module.reference_solution(t, dt=1e-4)
    _, u_fine = module.reference_solution(t, n_x=1024)
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert rel(u, u_dt) < 1e-9                      # the time error: ETDRK4 converged
    assert rel(u, u_fine[:, ::2]) < 2e-5            # the space error: 50x below 1e-3
    np.testing.assert_allclose(u[0], x**2 * np.cos(np.pi * x), atol=1e-14)
    assert np.all(np.abs(u) < 1.0 + 1e-6)           # the maximum principle of Allen–Cahn
    with pytest.raises(ValueError, match=r"`t_out` must be increasing multiples of dt"):
        module.reference_solution(np.array([0.00011]))


def _load(name: str):
    import importlib.util
    path = next(e for e in EXAMPLES if e.name == name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions; trains only under __main__
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name, bound", [("11_antiderivative_operator.py", 1e-2),
                                         ("12_diffusion_reaction_operator.py", 2e-2),
                                         ("14_darcy_fno.py", 2e-2)])
def test_operator_examples_reach_their_stated_accuracy(tmp_path, name, bound):
    """Mean relative L2 over the unseen inputs (the issue's bars: 1 % and 2 % in 15 min)."""
    stdout = _run(next(e for e in EXAMPLES if e.name == name), tmp_path, steps=None,
                  timeout=1800)
    err = float(re.search(r"mean relative L2 error over [0-9]+ unseen [a-z ]+: "
                          r"([0-9.e+-]+)", stdout).group(1))
    seconds = float(re.search(r"steps in ([0-9]+) s", stdout).group(1))
    assert err < bound and seconds < 900, stdout


def test_diffusion_reaction_reference_converges_well_below_the_operator_error():
    """The example's Crank–Nicolson finite differences: second order, and on its 101 x 101
    grid within 1e-3 of a 4x finer one (the operator is measured at 2e-2)."""
    import numpy as np
    module = _load("12_diffusion_reaction_operator.py")
    import jno_flax as jno
    f = jno.functions.grf(8, n_sensors=100, length_scale=0.2, seed=5).values
    s = np.linspace(0, 1, 100)
    coarse, mid = module.solve_fd(f, s), module.solve_fd(f, s, nx=201, nt=201)[:, ::2, ::2]
    fine = module.solve_fd(f, s, nx=401, nt=401)[:, ::4, ::4]
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)  # noqa: E731
    assert rel(coarse, fine) < 1e-3
    assert 3.0 < rel(coarse, fine) / rel(mid, fine) < 5.5       # second order
    assert np.all(coarse[:, 0] == 0) and np.all(coarse[:, :, [0, -1]] == 0)
    # the equation holds on the grid (centred differences), once the corner layer of
    # u(0, x) = 0 against f = 1 at the walls has diffused (t >= 0.1)
    one = module.solve_fd(np.ones((1, 100)), s, nx=201, nt=201)[0]
    u_t = (one[2:, 1:-1] - one[:-2, 1:-1]) / (2 / 200)
    u_xx = (one[1:-1, 2:] - 2 * one[1:-1, 1:-1] + one[1:-1, :-2]) / (1 / 200) ** 2
    resid = u_t - module.D * u_xx - module.K * one[1:-1, 1:-1] ** 2 - 1.0
    assert np.abs(resid[19:]).max() < 1e-3


def test_darcy_solver_is_exact_for_constant_permeability():
    import numpy as np
    module = _load("14_darcy_fno.py")
    a = np.full((2, 33), [[2.0], [0.5]])
    xs = np.linspace(0, 1, 33)
    np.testing.assert_allclose(module.solve_darcy(a), xs * (1 - xs) / (2 * a), atol=1e-12)
