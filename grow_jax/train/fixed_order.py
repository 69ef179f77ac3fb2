"""Gradient reduction over the batch shards in a fixed order (`mesh.fixed_order_reduce`).

The default train step lets XLA insert the gradient all-reduce; its summation order is the
runtime's (in-process on one host, gloo's ring across processes), so the same global batch
on 1 process x 4 devices and on 2 processes x 2 devices gives gradients that differ by
float32 rounding (~1e-7 relative), which Adam turns into parameter differences of up to
~lr * 1e-3 on entries whose gradient is near zero.

Here the whole step runs on every device under `shard_map` (`sharded_step`): each device
sums the weighted gradients and metrics of its own rows (`step.weighted_sums`), the
per-device sums are all-gathered (exact copies) and added in device order 0..S-1
(`ordered_sum`), and every device runs the optimizer update on the whole parameters. So
every device, in every process layout (and every data x fsdp split) of the same device
count, computes bit-identical parameters. The cost: the state is replicated (full
parameters, gradients and optimizer state on each device: no FSDP saving) and each device
holds S gradient copies during the sum, so this is for exactness checks and small models,
not a 7B run. Each device's rows must be a batch of their own: collate with
`BatchShape(shards=S)`.
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import PartitionSpec as P

from grow_jax.sharding import MESH_AXES


def ordered_sum(tree, axes=MESH_AXES):
    """Inside `sharded_step`: the sum over the devices of every leaf of `tree`, added in
    device order 0..S-1 from all-gathered (exact) copies, the same on every device."""
    def one(x):
        stacked = jax.lax.all_gather(x, axes)  # [S, ...], device order
        return functools.reduce(lambda acc, i: acc + stacked[i], range(1, stacked.shape[0]),
                                stacked[0])

    return jax.tree.map(one, tree)


def sharded_step(step_fn, mesh, batch_dims: dict):
    """`step_fn(state, batches)` run whole on every device under `shard_map`: the state
    replicated (as `Learner(fixed_order=True)` keeps it: then every device runs the same
    program for every data x fsdp split of the mesh), each device with its
    own rows of the [M, A, ...] batches (dim 2 + batch_dims[key] split over all mesh axes;
    mesh.tensor must be 1). `step_fn` reduces over the devices with `ordered_sum` only."""
    if mesh.shape["tensor"] != 1:
        raise ValueError(f"fixed-order reduction needs mesh.tensor = 1, got "
                         f"{mesh.shape['tensor']}")
    n = mesh.size

    def spec(key, x):
        axes = [None] * x.ndim
        dim = 2 + batch_dims[key]
        if x.shape[dim] % n:
            raise ValueError(f"fixed-order reduction: {key}'s batch dimension ({x.shape[dim]}) "
                             f"does not split over the mesh's {n} devices; collate with "
                             f"BatchShape.fit(..., shards={n})")
        axes[dim] = MESH_AXES
        return P(*axes)

    def run(state, batches):
        specs = {k: spec(k, v) for k, v in batches.items()}
        # check_vma=False: gradients of the replicated params stay each device's own (with
        # it, JAX sums the cotangents of some replicated inputs over the devices itself,
        # measured on the vision tower's); `ordered_sum` is what makes results replicated
        return jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), specs), out_specs=P(),
                             check_vma=False)(state, batches)

    return run
