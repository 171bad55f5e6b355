"""Trainable things: wrapped NNX modules (:class:`Model`) and scalar/array parameters."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jno_flax._dtypes import default_float
from jno_flax._checks import fmt_shape as _fmt_shape
from jno_flax._checks import name as check_name
from jno_flax._checks import optax_transform
from jno_flax._expr import Expr, _common_pointset, as_expr, common_instances, unique_op


class Trainable:
    """Common behaviour of models and parameters: an NNX module, an optimizer, freezing.

    Attributes:
        module: the live ``nnx.Module``; updated in place after each ``fit``/``solve``.
        tx: the optax transform (``None``: the trainer's default, ``optax.adam(1e-3)``).
        frozen: frozen trainables keep their values during training.
    """

    kind = "trainable"

    def __init__(self, module: nnx.Module, name: str | None):
        check_name("name", name, allow_none=True)
        self.module = module
        self.user_name = name
        self.tx: optax.GradientTransformation | None = None
        self.frozen = False
        self.groups: list[tuple[tuple[bool, ...], optax.GradientTransformation | None]] = []
        self._composed: tuple[Any, optax.GradientTransformation] | None = None

    def optimizer(self, tx: optax.GradientTransformation) -> "Trainable":
        """Train this with the optax transform ``tx``; returns ``self``."""
        self.tx = optax_transform("tx", tx)
        return self

    def freeze(self) -> "Trainable":
        """Keep the current values during training (no gradient, no update)."""
        self.frozen = True
        return self

    def unfreeze(self) -> "Trainable":
        self.frozen = False
        return self

    def mask(self, selector: Any):
        """A masked view of some parameters (an NNX filter or a boolean pytree); see
        :class:`~jno_flax._masks.MaskedView`. The trainable itself is not changed."""
        from jno_flax._masks import MaskedView
        return MaskedView(self, selector)

    def add_group(self, selected: list[bool], tx: optax.GradientTransformation | None) -> None:
        """Train the selected leaves with ``tx`` (``None``: keep them fixed)."""
        self.groups.append((tuple(selected), tx))

    def transform(self, default: optax.GradientTransformation) -> optax.GradientTransformation:
        """The optax transform of all leaves: the trainable's own (or ``default``) plus groups."""
        base = self.tx or default
        if not self.groups:
            return base
        key = (id(base), tuple((sel, id(tx)) for sel, tx in self.groups))
        if self._composed is None or self._composed[0] != key:
            params = self.params()
            labels = ["default"] * len(jax.tree.leaves(params))
            transforms = {"default": base}
            for i, (sel, tx) in enumerate(self.groups):
                transforms[f"group_{i}"] = tx if tx is not None else optax.set_to_zero()
                labels = [f"group_{i}" if s else lab for s, lab in zip(sel, labels)]
            tree = jax.tree.unflatten(jax.tree.structure(params), labels)
            self._composed = (key, optax.multi_transform(transforms, tree))
        return self._composed[1]

    def split(self):
        """``(graphdef, params, rest)``: the NNX split on ``nnx.Param``."""
        return nnx.split(self.module, nnx.Param, ...)

    def params(self) -> nnx.State:
        return nnx.state(self.module, nnx.Param)

    @property
    def num_params(self) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(self.params()))


class Model(Trainable):
    """An ``nnx.Module`` used in expressions: ``model(x, y)`` is a field.

    The inputs are concatenated on their last axis; per point the module receives an unbatched
    ``(d_in,)`` vector and must return ``(d_out,)``.
    """

    kind = "model"

    def __call__(self, *args: Any) -> Expr:
        if not args:
            raise TypeError("a model call needs at least one input expression, got none.")
        return ModelCall(self, [as_expr(a, "model input") for a in args])

    def __repr__(self) -> str:
        return f"<Model {self.user_name or type(self.module).__name__}: {self.num_params} params>"


def wrap(module: nnx.Module, name: str | None = None) -> Model:
    """Wrap any ``nnx.Module`` mapping ``(..., d_in) -> (..., d_out)`` for use in expressions.

    >>> net = wrap(MLP(2, 1, hidden=16, depth=2, rngs=nnx.Rngs(0)), name="u")
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(
            f"`module` must be a flax.nnx.Module, got {type(module).__name__}: {module!r}. "
            "Build the network with flax.nnx (e.g. `jno.nn.MLP`) and pass the instance."
        )
    return Model(module, name)


class ModelCall(Expr):
    """``model(*inputs)``: per point on fields, or on whole arrays for global inputs."""

    def __init__(self, model: Model, inputs: list[Expr]):
        self.model = model
        self.trainables = (model,)
        ps = _common_pointset(inputs, "model input")
        pointwise = ps is not None and all(c.pointset is not None or len(c.shape) <= 1
                                           for c in inputs)
        #: on per-instance values only: the module runs once per instance
        self.per_instance = ps is None and any(c.instances is not None for c in inputs)
        for c in inputs:
            if pointwise and len(c.shape) != 1:
                raise ValueError(
                    f"model inputs must be fields of shape (D,) per point; got {c!r}."
                )
        per_item = pointwise or self.per_instance
        in_shapes = [c.shape if per_item else c.value_shape for c in inputs]
        d_in = sum(s[-1] if s else 1 for s in in_shapes)
        if self.per_instance and len({s[:-1] for s in in_shapes}) > 1:
            raise ValueError(f"per-instance inputs of {model!r} must agree in all but their "
                             f"last axis, got shapes {in_shapes}.")
        graphdef, params, rest = model.split()
        structs = [jax.ShapeDtypeStruct(s, inputs[0].dtype) for s in in_shapes]
        try:
            out = jax.eval_shape(lambda p, z: self._apply(nnx.merge(graphdef, p, rest), z),
                                 params, structs)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"calling {model!r} on an input with {d_in} features failed: {err}"
            ) from None
        if out.ndim < 1:
            raise ValueError(f"{model!r} must return at least a 1-D output (..., d_out), "
                             f"got shape {_fmt_shape(out.shape)}.")
        super().__init__(inputs, ps if pointwise else None, out.shape, out.dtype,
                         f"{model.user_name or 'model'}(...)", (model, pointwise))
        if self.per_instance:
            self.instances = common_instances(inputs, "model input")

    def _apply(self, module: nnx.Module, values):
        """``module`` on the inputs: concatenated on their last axis, or apart for a module
        that says ``takes_separate_inputs`` (a DeepONet: branch and trunk inputs)."""
        if getattr(module, "takes_separate_inputs", False):
            return module(*values)
        return module(jnp.concatenate([jnp.reshape(v, v.shape or (1,)) for v in values],
                                      axis=-1))

    def point_eval(self, ctx):
        return self._apply(ctx.module(self.model), [ctx.value(c) for c in self.children])

    def global_eval(self, ev):
        module = ev.module(self.model)
        values = [ev.value(c) for c in self.children]
        if self.per_instance:
            axes = [0 if c.instances is not None else None for c in self.children]
            return jax.vmap(lambda *v: self._apply(module, v), in_axes=axes)(*values)
        return self._apply(module, values)


class ParameterModule(nnx.Module):
    """The tiny NNX module behind :func:`parameter`: one ``nnx.Param`` named ``value``."""

    def __init__(self, value: jax.Array):
        self.value = nnx.Param(value)


class Parameter(Trainable, Expr):
    """A trainable array that is also an expression (global, of its declared shape)."""

    kind = "parameter"

    def __init__(self, value: jax.Array, name: str | None):
        Trainable.__init__(self, ParameterModule(value), name)
        Expr.__init__(self, (), None, value.shape, value.dtype, name or "parameter", unique_op())
        self.trainables = (self,)

    def global_eval(self, ev):
        return ev.module(self).value[...]

    def __repr__(self) -> str:
        return f"<Parameter {self.user_name or ''} shape={_fmt_shape(self.shape)}>"

    # ``name(...)`` keeps its expression meaning (naming a node for logs); a parameter's own
    # name (checkpoints, optimizer groups) is given at construction.


def parameter(shape, key: jax.Array | None = None, name: str | None = None,
              init: Callable | Any | None = None, dtype=None) -> Parameter:
    """A trainable array usable in any expression (inverse problems).

    Args:
        shape: the parameter's shape, e.g. ``(1,)`` or ``()``.
        key: PRNG key for ``init`` when it is an initializer ``init(key, shape, dtype)``.
        name: name used in checkpoints and logs (default ``param_<k>``).
        init: ``None`` (zeros), an array/number (the initial value), or an initializer.

    >>> a = parameter((1,), name="a").optimizer(optax.adam(1e-2))
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not (isinstance(shape, tuple) and all(isinstance(s, int) and not isinstance(s, bool)
                                             and s > 0 for s in shape)):
        raise ValueError(
            f"`shape` must be a tuple of positive integers such as (1,) or (3,), got {shape!r}."
        )
    dtype = dtype or default_float()
    if init is None:
        value = jnp.zeros(shape, dtype)
    elif callable(init):
        if key is None:
            raise ValueError("`key` is required when `init` is an initializer function.")
        value = jnp.asarray(init(key, shape, dtype))
    else:
        value = jnp.broadcast_to(jnp.asarray(init, dtype), shape) if jnp.ndim(init) == 0 \
            else jnp.asarray(init, dtype)
    if value.shape != shape:
        raise ValueError(f"`init` gives shape {_fmt_shape(value.shape)}, but `shape` is "
                         f"{_fmt_shape(shape)}.")
    return Parameter(value, name)
