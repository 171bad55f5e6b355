"""The hand-written training loop the benchmarks compare against (``jax.jit`` + ``lax.scan``),
the jno_flax side of a comparison, and the alternating timing of both."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def scan_runner(loss: Callable[..., jax.Array], params: Any,
                tx: optax.GradientTransformation, chunk: int,
                key: jax.Array | None = None, data: Any = None) -> Callable[[], float]:
    """A function that trains ``chunk`` more steps of ``loss`` (one compiled ``lax.scan``) and
    returns the last step's loss. With ``data`` (the points, a pytree of arrays), the loss is
    ``loss(params, data)`` and the data enter the compiled loop as an argument, as a batch does
    in a training loop (closed over, they would be compile-time constants: XLA would fold
    everything computed from the points alone, such as an embedding of fixed coordinates,
    which no loop that samples or mini-batches its points gets). With ``key``, the loss also
    receives ``fold_in(key, s)`` at step ``s`` (counted across calls), for in-step random
    draws."""

    @jax.jit
    def run(params, opt_state, s0, data):
        def body(carry, s):
            p, o = carry
            args = (() if data is None else (data,)) + (
                () if key is None else (jax.random.fold_in(key, s),))
            value, g = jax.value_and_grad(loss)(p, *args)
            updates, o = tx.update(g, o, p)
            return (optax.apply_updates(p, updates), o), value
        return jax.lax.scan(body, (params, opt_state), s0 + jnp.arange(chunk))

    carry = [(params, tx.init(params))]
    done = [0]

    def step() -> float:
        carry[0], losses = run(*carry[0], done[0], data)
        done[0] += chunk
        return float(jax.block_until_ready(losses)[-1])
    return step


def fit_runner(crux: Any, chunk: int, **trainer_kwargs: Any) -> Callable[[], float]:
    """The jno_flax side: a function that fits ``chunk`` more steps of ``crux`` (one compiled
    chunk, no logging, progress bar or checkpoints) and returns the last step's loss."""
    from jno_flax.trainers import Trainer
    trainer = Trainer(max_steps=chunk, chunk_size=chunk, enable_progress_bar=False,
                      logger=False, enable_model_summary=False, enable_checkpointing=False,
                      **trainer_kwargs)

    def step() -> float:
        trainer.max_steps = crux.global_step + chunk
        return float(trainer.fit(crux).total_loss[-1])
    return step


def alternate(runners: dict[str, Callable[[], float]], rounds: int, chunk: int
              ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Runs every runner ``rounds + 1`` times in turn (the first round compiles). Returns the
    median steady steps/s, the first round's seconds and the last loss of each."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    final: dict[str, float] = {}
    for _ in range(rounds + 1):
        for key, run in runners.items():
            t0 = time.perf_counter()
            final[key] = run()
            times[key].append(time.perf_counter() - t0)
    rate = {k: chunk / statistics.median(v[1:]) for k, v in times.items()}
    return rate, {k: v[0] for k, v in times.items()}, final
