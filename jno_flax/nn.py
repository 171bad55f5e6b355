"""Models: wrap NNX modules for use in expressions, and a ready MLP."""

from jno_flax._mlp import MLP
from jno_flax._trainable import Model, Parameter, ParameterModule, Trainable, wrap

__all__ = ["MLP", "Model", "Parameter", "ParameterModule", "Trainable", "wrap"]
