"""jno_flax: physics-informed neural networks on JAX + Flax NNX.

>>> import jno_flax as jno
>>> dom = jno.domain.rect(n_interior=1000, n_boundary=200)
>>> x, y = dom.variable("interior")
"""

from jno_flax import adaptive, domain, fn, functions, geometry, nn, optimizers
from jno_flax import numpy as np  # noqa: F401  (``jno.np``)
from jno_flax._expr import Expr
from jno_flax._problem import Problem, core
from jno_flax._seed import seed_everything
from jno_flax._tracker import Tracker, tracker
from jno_flax._trainable import Model, Parameter, parameter, wrap

__version__ = "0.1.0"

__all__ = ["adaptive", "domain", "fn", "functions", "geometry", "nn", "np", "optimizers", "Expr",
           "Problem", "core", "Tracker", "tracker", "Model", "Parameter", "parameter",
           "seed_everything", "wrap", "__version__"]
