"""Builds and trains the Poisson problem with ``jax_enable_x64`` set first; checks dtypes and
the parameter Jacobian against central finite differences. Prints ``ok`` on success."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

import jno_flax as jno  # noqa: E402
import jno_flax.numpy as jnn  # noqa: E402
from _poisson import relobralo_poisson  # noqa: E402

F64 = jnp.float64
p = relobralo_poisson(n_interior=48, n_boundary=16, hidden=8)
net, u, pde, w_pde, w_bc = p.net, p.u, p.pde, p.w_pde, p.w_bc
crux = jno.core([w_pde * pde, p.w_bc * p.bc,
                 jnn.tracker(jnn.mean(jnn.abs(u - p.u_exact)), 5, name="err")])

assert all(leaf.dtype == F64 for leaf in jax.tree.leaves(net.params())), "MLP parameters"
assert all(a.dtype == F64 for a in crux.registry.batch().values()), "points"
assert all(leaf.dtype in (F64, jnp.int64, jnp.int32)
           for leaf in jax.tree.leaves(crux.registry.initial_extras())), "balancer state"
assert u.dtype == F64 and pde.dtype == F64 and w_pde.dtype == F64, "expression dtypes"

history = crux.solve(20, enable_progress_bar=False)
assert history.total_loss.dtype == np.float64, history.total_loss.dtype
assert all(v.dtype == np.float64 for v in history.losses.values()), "History losses"
assert history.trackers["err"].values.dtype == np.float64, "tracker values"
assert history.trackers["weights/relobralo0/pde"].values.dtype == np.float64, "weights"
assert all(leaf.dtype in (F64, jnp.int64, jnp.int32)
           for leaf in jax.tree.leaves(crux.state.extras)), "balancer state after training"
assert all(np.asarray(v).dtype == np.float64 for v in crux.eval([u, pde, w_pde, w_bc])), "eval"

# parameter Jacobian of the field against central finite differences
J = np.asarray(crux.eval(u.grad(net)))[0]                      # (N, P)
params = net.params()
leaves, treedef = jax.tree.flatten(params)
sizes = [leaf.size for leaf in leaves]
flat = np.concatenate([np.ravel(leaf) for leaf in leaves])


def u_at(theta):
    parts, offset = [], 0
    for leaf, n in zip(leaves, sizes):
        parts.append(jnp.asarray(theta[offset:offset + n]).reshape(leaf.shape))
        offset += n
    nnx.update(net.module, jax.tree.unflatten(treedef, parts))
    return np.asarray(crux.eval(u))[0, :, 0]


eps = 1e-6
for k in range(0, flat.size, 7):
    up, down = flat.copy(), flat.copy()
    up[k] += eps
    down[k] -= eps
    fd = (u_at(up) - u_at(down)) / (2 * eps)
    np.testing.assert_allclose(J[:, k], fd, rtol=0, atol=1e-8, err_msg=f"parameter {k}")
u_at(flat)
print("ok")
