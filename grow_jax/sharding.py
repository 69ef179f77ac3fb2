"""Device mesh, logical-axis rules and sharding helpers.

Parameters carry `logical_axes` metadata (e.g. ("embed", "mlp")); `AxisRules` maps each
logical name to mesh axes of the ("data", "fsdp", "tensor") mesh. A dimension that the
mapped mesh axes do not divide is replicated instead (so tiny test models shard on any
mesh). `shard(x, axes)` is a no-op without a mesh, so model code can always call it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None

DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ("data", "fsdp", "tensor") mesh over the first data*fsdp*tensor devices."""
    n = data * fsdp * tensor
    devices = jax.devices() if devices is None else list(devices)
    if n > len(devices):
        raise ValueError(
            f"mesh data={data} x fsdp={fsdp} x tensor={tensor} needs {n} devices, "
            f"only {len(devices)} available"
        )
    return jax.make_mesh(
        (data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:n]
    )


@dataclasses.dataclass(frozen=True)
class AxisRules:
    """Logical axis name -> mesh axes; names not listed (and None) are replicated."""

    rules: tuple[tuple[str, MeshAxes], ...] = DEFAULT_RULES

    def __post_init__(self):
        for name, axes in self.rules:
            for a in _as_tuple(axes):
                if a not in MESH_AXES:
                    raise ValueError(
                        f"rule {name!r} -> {axes!r}: unknown mesh axis {a!r}; "
                        f"mesh axes are {MESH_AXES}"
                    )

    def mesh_axes(self, name: str | None) -> tuple[str, ...]:
        for n, axes in self.rules:
            if n == name:
                return _as_tuple(axes)
        return ()

    def spec(
        self, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None, mesh=None
    ) -> PartitionSpec:
        """PartitionSpec for `logical_axes`; with shape and mesh, drops mesh axes that do not
        divide a dimension (longest dividing prefix kept) and never reuses a mesh axis."""
        used: set[str] = set()
        out = []
        for i, name in enumerate(logical_axes):
            axes = tuple(a for a in self.mesh_axes(name) if a not in used)
            if shape is not None and mesh is not None:
                sizes = dict(mesh.shape)
                while axes and shape[i] % int(np.prod([sizes.get(a, 1) for a in axes])):
                    axes = axes[:-1]
            used.update(axes)
            out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
        return PartitionSpec(*out)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _logical_axes(v: nnx.Variable) -> tuple | None:
    return v.get_metadata().get("logical_axes")


def state_shardings(tree: Any, mesh, rules: AxisRules | None = None) -> Any:
    """NamedShardings for an NNX model or state (real or from `nnx.eval_shape`), same tree
    structure as `nnx.state(model)`: usable as jit in/out shardings or for device_put."""
    rules = rules or AxisRules()
    state = nnx.state(tree) if isinstance(tree, nnx.Module) else tree

    def one(v):
        if not isinstance(v, nnx.Variable):
            return NamedSharding(mesh, PartitionSpec())
        axes = _logical_axes(v)
        shape = v.get_value().shape
        if axes is None or len(axes) != len(shape):
            spec = PartitionSpec()
        else:
            spec = rules.spec(axes, shape, mesh)
        return v.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh, rules: AxisRules | None = None) -> nnx.Module:
    """Place every parameter of `model` on `mesh` per `rules` (in place); returns the model."""
    state = nnx.state(model)
    nnx.update(model, jax.device_put(state, state_shardings(state, mesh, rules)))
    return model


def shard(x, logical_axes: Sequence[str | None], rules: AxisRules | None = None):
    """Sharding constraint by logical axes under the current mesh (`jax.set_mesh`); no-op
    without one or inside a shard_map over every mesh axis (train/fixed_order.py), and dims
    the mesh axes do not divide stay replicated."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or mesh.are_all_axes_manual:  # inside a full shard_map
        return x
    spec = (rules or AxisRules()).spec(logical_axes, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, spec)
