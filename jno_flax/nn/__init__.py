"""Models: wrap NNX modules for use in expressions, and the networks of PINN recipes.

Networks: :class:`MLP`, :class:`ModifiedMLP`, :class:`PirateNet`; embeddings put in front of
any of them with :class:`Sequential`: :class:`FourierFeatures`, :class:`PeriodicEmbedding`;
dense layers with random weight factorisation: :class:`RWFLinear` (``rwf=(mean, std)`` on every
network). Neural operators: :class:`DeepONet` (branch and trunk nets, per point) and
:class:`FNO` (Fourier layers on one instance's grid, :class:`SpectralConv`), trained on a
family of input functions (:mod:`jno_flax.functions`).
"""

from jno_flax.nn._embeddings import FourierFeatures, PeriodicEmbedding
from jno_flax.nn._layers import ACTIVATIONS, RWFLinear, Sequential
from jno_flax.nn._mlp import MLP, ModifiedMLP
from jno_flax.nn._operators import FNO, DeepONet, SpectralConv
from jno_flax.nn._piratenet import PirateBlock, PirateNet
from jno_flax._trainable import Model, Parameter, ParameterModule, Trainable, wrap

__all__ = ["ACTIVATIONS", "DeepONet", "FNO", "FourierFeatures", "MLP", "Model", "ModifiedMLP",
           "Parameter", "ParameterModule", "PeriodicEmbedding", "PirateBlock", "PirateNet",
           "RWFLinear", "Sequential", "SpectralConv", "Trainable", "wrap"]
