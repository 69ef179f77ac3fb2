"""grain pipelines: rollout samples -> shuffled, bucketed, stacked update batches.

A rollout's samples are a random-access `MapDataset`; every epoch is a fresh seeded
permutation (grain reshuffles per repeat), cut into micro-batches that `collate` pads to
one static `BatchShape`, then stacked to [M updates, A accumulation steps, ...] so the
jitted train step runs a whole epoch in one call. Seeds derive from (run seed, iteration),
so a resumed run replays exactly the same batches. With `pack_len` set, each micro-batch
is packed instead (grow_jax.data.packing): same samples, same per-sample loss arrays,
fewer pad tokens; the packed shape is fitted to the epoch's micro-batches.
"""

from __future__ import annotations

import functools
from typing import Iterator, Sequence

import grain
import numpy as np

from grow_jax.data import packing
from grow_jax.data.samples import BatchShape, Sample, collate


def stack_micro_batches(micro: list[dict], accumulation: int) -> dict:
    """[M*A] micro-batch dicts -> one dict of arrays with leading dims [M, A]."""
    if len(micro) % accumulation:
        raise ValueError(f"{len(micro)} micro-batches do not split into updates of "
                         f"{accumulation}")
    m = len(micro) // accumulation
    return {k: np.stack([b[k] for b in micro]).reshape((m, accumulation) + micro[0][k].shape)
            for k in micro[0]}


def epoch_batches(samples: Sequence[Sample], shape: BatchShape, model_config, *, epochs: int,
                  accumulation: int = 1, seed: int = 0, pad_id: int = 0,
                  pack_len: int | None = None, row_multiple: int = 1) -> Iterator[dict]:
    """Yields one stacked batch dict per epoch over `samples`.

    Each epoch holds ceil(N / (B*A)) updates; the last update is topped up with
    zero-weight padding rows so no sample is dropped and shapes stay static.
    `pack_len` (None: pad each sample): pack micro-batches into rows of that many tokens
    (0: the cheapest length, `packing.fit`), `row_multiple` rows at a time.
    """
    if not samples:
        raise ValueError("no samples to train on")
    n = len(samples)
    fields = samples[0].optional_fields()
    to_batch = functools.partial(collate, shape=shape, model_config=model_config,
                                 pad_id=pad_id, fields=fields)
    if pack_len is not None:
        packing.check_pack_len(shape, pack_len)
    ds = grain.MapDataset.source(list(samples)).shuffle(seed=seed).repeat(epochs)
    per_update = shape.batch * accumulation
    updates = -(-n // per_update)
    for e in range(epochs):
        epoch = ds.slice(slice(e * n, (e + 1) * n))
        if pack_len is None:
            micro = list(epoch.batch(shape.batch, batch_fn=to_batch))
            micro += [to_batch([])] * (updates * accumulation - len(micro))
        else:
            groups = list(epoch.batch(shape.batch, batch_fn=list))
            groups += [[]] * (updates * accumulation - len(groups))
            pshape = packing.fit(groups, shape, model_config.text, pack_len, row_multiple)
            micro = [packing.collate_packed(g, pshape, model_config, pad_id, fields)
                     for g in groups]
        yield stack_micro_batches(micro, accumulation)
