"""50 steps of the Poisson problem on 4 forced CPU devices against 1 device, for point counts
that 4 divides and that it does not (``N_INTERIOR N_BOUNDARY [schemes]`` as arguments).
ReLoBRaLo weights, an interval tracker of the error and a Jacobian-norm tracker ride along;
with ``schemes``, every other adaptive scheme then trains 20 steps on 1 and on 4 devices too.
Prints ``ok`` on success."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402
from _poisson import relobralo_poisson, tracked_core  # noqa: E402

N_INTERIOR, N_BOUNDARY = int(sys.argv[1]), int(sys.argv[2])
SCHEMES = sys.argv[3:] == ["schemes"]
QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}
seen: dict[str, object] = {}


class Probe(Trainer):
    """Records the sharding of every point array the training step receives."""

    def training_step(self, state, batch):
        for key, points in batch.items():
            jax.debug.inspect_array_sharding(
                points, callback=lambda s, key=key: seen.__setitem__(key, s))
        return super().training_step(state, batch)


def run(devices):
    p = relobralo_poisson(N_INTERIOR, N_BOUNDARY, hidden=16)
    crux = tracked_core(p)
    trainer = Probe(max_steps=50, devices=devices, **QUIET)
    history = trainer.fit(crux)
    return history, crux, p.u


assert len(jax.devices()) == 4, jax.devices()
h1, crux1, u1 = run(1)
seen.clear()
h4, crux4, u4 = run("auto")
for key, sharding in seen.items():  # the point arrays inside the step span the 4 devices
    assert len(sharding.device_set) == 4, (key, sharding)
    assert sharding.spec[0] == "points", (key, sharding)
assert len(seen) == 2, seen
np.testing.assert_allclose(h4.total_loss, h1.total_loss, rtol=1e-5)
for name in h1.losses:
    np.testing.assert_allclose(h4.losses[name], h1.losses[name], rtol=1e-5)
for name in ("err", "jac_norm"):
    np.testing.assert_array_equal(h4.trackers[name].steps, h1.trackers[name].steps)
    np.testing.assert_allclose(h4.trackers[name].values, h1.trackers[name].values, rtol=1e-5)
np.testing.assert_allclose(np.asarray(crux4.eval(u4)), np.asarray(crux1.eval(u1)), rtol=1e-4,
                           atol=1e-6)


def weighted(scheme: str):
    """The Poisson losses weighted by ``scheme``; causal weights: the heat equation
    u_t = u_xx on (0, 1) x (0, 1) with 4 time slices."""
    p = relobralo_poisson(N_INTERIOR, N_BOUNDARY, hidden=16)
    losses = [p.pde, p.bc]
    if scheme == "causal":
        dom = jno.domain.interval(0, 1, n_interior=N_INTERIOR, time=(0, 1), seed=0)
        x, t = dom.variable("interior")
        u = jno.nn.wrap(jno.nn.MLP(2, 1, hidden=16, depth=2, rngs=nnx.Rngs(0)), name="u")(x, t)
        losses = jno.adaptive.time_slices(u.d(t) - u.d2(x), t, 4)
        w = jno.adaptive.causal(losses)
    elif scheme in ("lr_annealing", "ntk"):
        w = getattr(jno.adaptive, scheme)(losses, period=5)
    else:
        w = getattr(jno.adaptive, scheme)(losses)
    terms = [w[i] * loss for i, loss in enumerate(losses)]
    return jno.core(terms + ([w.penalty] if scheme == "uncertainty" else []))


if SCHEMES:
    for scheme in ("softadapt", "dwa", "lr_annealing", "ntk", "uncertainty", "causal"):
        runs = [Trainer(max_steps=20, devices=d, **QUIET).fit(weighted(scheme)) for d in (1, 4)]
        np.testing.assert_allclose(runs[1].total_loss, runs[0].total_loss, rtol=1e-5,
                                   err_msg=scheme)
        for name, series in runs[0].trackers.items():
            np.testing.assert_allclose(runs[1].trackers[name].values, series.values,
                                       rtol=1e-5, atol=1e-7, err_msg=f"{scheme} {name}")
print("ok")
