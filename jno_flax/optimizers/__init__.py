"""Optimizers beyond optax's for PINN accuracy, each an optax transform for
``model.optimizer(tx)``, ``optax.chain`` and ``SwitchOptimizer``.

* :func:`bfgs`, :func:`ssbfgs`, :func:`ssbroyden`: dense quasi-Newton methods (self-scaled
  Broyden family) with a strong-Wolfe line search;
* :func:`soap`: Adam in Shampoo's eigenbasis;
* :func:`engd`: energy natural gradient (Gauss–Newton) on mean-square losses.

They reach their accuracy in float64: ``Trainer(precision="64-true")`` (with
``jax.config.update("jax_enable_x64", True)`` at the top of the script).
"""

from jno_flax.optimizers._engd import EngdState, engd, gauss_newton_direction
from jno_flax.optimizers._objective import Objective
from jno_flax.optimizers._quasi_newton import (QuasiNewtonState, bfgs, broyden_update,
                                               scale_by_quasi_newton, ssbfgs, ssbroyden)
from jno_flax.optimizers._soap import SoapState, scale_by_soap, soap

__all__ = ["bfgs", "ssbfgs", "ssbroyden", "scale_by_quasi_newton", "broyden_update",
           "QuasiNewtonState", "soap", "scale_by_soap", "SoapState", "engd", "EngdState",
           "gauss_newton_direction", "Objective"]
