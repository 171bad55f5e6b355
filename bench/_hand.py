"""The hand-written training loop the benchmarks compare against: ``jax.jit`` + ``lax.scan``."""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax


def scan_runner(loss: Callable[[Any], jax.Array], params: Any,
                tx: optax.GradientTransformation, chunk: int) -> Callable[[], float]:
    """A function that trains ``chunk`` more steps of ``loss`` (one compiled ``lax.scan``) and
    returns the last step's loss."""

    @jax.jit
    def run(params, opt_state):
        def body(carry, _):
            p, o = carry
            value, g = jax.value_and_grad(loss)(p)
            updates, o = tx.update(g, o, p)
            return (optax.apply_updates(p, updates), o), value
        return jax.lax.scan(body, (params, opt_state), None, length=chunk)

    carry = [(params, tx.init(params))]

    def step() -> float:
        carry[0], losses = run(*carry[0])
        return float(jax.block_until_ready(losses)[-1])
    return step
