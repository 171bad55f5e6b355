"""A physics-informed DeepONet (antiderivative) trained 30 steps on 4 forced CPU devices and on
1: equal losses, an interval tracker, ReLoBRaLo weights and the trained operator, with 8 of 24
functions and all 42 points per step (42 is not divisible by 4). Prints ``ok`` on success."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
from jno_flax.trainers import Trainer  # noqa: E402

QUIET = {"enable_progress_bar": False, "logger": False, "enable_model_summary": False}


def run(devices: int):
    f = jno.functions.grf(24, n_sensors=16, length_scale=0.2, seed=0)
    dom = jno.domain.interval(0, 1, n_interior=42, n_boundary=2, seed=0)
    x, = dom.variable("interior")
    x0, = dom.variable("left")
    branch = jno.nn.MLP(16, 8, hidden=16, depth=2, rngs=nnx.Rngs(0))
    trunk = jno.nn.MLP(1, 8, hidden=16, depth=2, rngs=nnx.Rngs(1))
    net = jno.nn.wrap(jno.nn.DeepONet(branch, trunk, 8, n_sensors=16, n_coords=1), name="G")
    net.optimizer(optax.adam(1e-3))
    res, ic = (net(f, x).d(x) - f(x)).mse, net(f, x0).mse
    w_res, w_ic = jno.adaptive.relobralo([res, ic])
    crux = jno.core([(w_res * res).name("res"), (w_ic * ic).name("ic"),
                     net(f, x).mean.tracker(interval=5, name="mean_u")])
    history = Trainer(max_steps=30, devices=devices, batch_size={f: 8}, **QUIET).fit(crux)
    return history, np.asarray(crux.eval(net(f, x)))


assert len(jax.devices()) == 4
one, u1 = run(1)
four, u4 = run(4)
np.testing.assert_allclose(four.total_loss, one.total_loss, rtol=1e-5)
np.testing.assert_allclose(four.trackers["mean_u"].values, one.trackers["mean_u"].values,
                           rtol=1e-5, atol=1e-7)
assert len(one.trackers["mean_u"].values) == 6
np.testing.assert_allclose(u4, u1, rtol=1e-4, atol=1e-6)
assert u1.shape == (24, 42, 1)
print("ok")
