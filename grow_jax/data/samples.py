"""State-action samples: what one training sequence is, and how a batch of them is laid out.

GROW cuts every episode into one sample per decision (instruction + current frame ->
action tokens); the trajectory-level baseline keeps the whole multi-turn conversation as
one sample. Both become the same `Sample` record, so one train step serves every estimator.

Everything data-dependent (M-RoPE positions, image patches, where the action tokens sit)
is computed here on the host; `collate` turns samples into fixed-shape arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from grow_jax.data.images import fit_to_grid
from grow_jax.models.qwen2_vl import inputs as qinputs
from grow_jax.rollout.types import Trajectory


OPTIONAL_FIELDS = ("ref_logprobs", "old_values", "returns", "token_weights")


@dataclasses.dataclass
class Sample:
    """One training sequence. Positions index `input_ids`; K = number of action tokens."""

    input_ids: np.ndarray  # int32 [T] prompt (+ earlier turns) + action tokens
    position_ids: np.ndarray  # int32 [3, T] M-RoPE positions
    pixel_values: np.ndarray  # float32 [P, patch_dim] patches of every image in the sequence
    image_grid_thw: np.ndarray  # int32 [N, 3]
    target_pos: np.ndarray  # int32 [K] positions whose *next* token is an action token
    old_logprobs: np.ndarray  # float32 [K] behaviour log-probabilities of those tokens
    advantages: np.ndarray  # float32 [K]
    # Optional per-token fields (OPTIONAL_FIELDS), batched only when set:
    ref_logprobs: np.ndarray | None = None  # float32 [K] frozen reference's (kl_coef > 0)
    old_values: np.ndarray | None = None  # float32 [K] PPO: V_old(s), the same at every k
    returns: np.ndarray | None = None  # float32 [K] PPO: value target, the same at every k
    token_weights: np.ndarray | None = None  # float32 [K] ppo_cot: cot_lambda on thoughts

    def optional_fields(self) -> tuple[str, ...]:
        return tuple(f for f in OPTIONAL_FIELDS if getattr(self, f) is not None)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[0])


def encode_images(frames: Sequence[np.ndarray], model_config, fit_mode: str = "pad"):
    """Frames -> (pixel_values, image_grid_thw) in transformers' layout."""
    v = model_config.vision
    factor = v.patch_size * v.spatial_merge_size
    if not frames:
        return np.zeros((0, v.in_chans * v.temporal_patch_size * v.patch_size**2), np.float32), (
            np.zeros((0, 3), np.int32))
    return qinputs.images_to_patches([fit_to_grid(f, factor, fit_mode) for f in frames],
                                     model_config)


def make_sample(input_ids, images, target_pos, old_logprobs, advantages, model_config,
                fit_mode: str = "pad") -> Sample:
    """Builds a Sample, computing patches and M-RoPE positions once per sample."""
    input_ids = np.asarray(input_ids, np.int32)
    pixel_values, grid = encode_images(images, model_config, fit_mode)
    pos, _ = qinputs.get_rope_index(input_ids[None], grid if len(grid) else None, None,
                                    model_config)
    return Sample(input_ids=input_ids, position_ids=np.asarray(pos[:, 0], np.int32),
                  pixel_values=np.asarray(pixel_values, np.float32),
                  image_grid_thw=np.asarray(grid, np.int32),
                  target_pos=np.asarray(target_pos, np.int32),
                  old_logprobs=np.asarray(old_logprobs, np.float32),
                  advantages=np.asarray(advantages, np.float32))


def decision_samples(traj: Trajectory, advantages: np.ndarray, model_config,
                     fit_mode: str = "pad", keep=None) -> list[Sample]:
    """GROW's state-action samples: one per decision, its prompt + its action tokens.

    `advantages[t]` is decision t's advantage; `keep` (optional bool per decision) drops
    decisions, e.g. those with zero advantage.
    """
    out = []
    for t, step in enumerate(traj.steps):
        if keep is not None and not keep[t]:
            continue
        k = len(step.action_ids)
        if k == 0:
            continue
        ids = np.concatenate([step.prompt_ids, step.action_ids])
        tpos = len(step.prompt_ids) - 1 + np.arange(k)
        out.append(make_sample(ids, traj.prompt_images(t), tpos, step.logprobs,
                               np.full(k, advantages[t], np.float32), model_config, fit_mode))
    return out


def conversation_sample(traj: Trajectory, advantages: np.ndarray, model_config,
                        fit_mode: str = "pad") -> Sample:
    """The whole episode as one multi-turn sequence (trajectory-level GRPO).

    Requires prompts recorded with the full history: prompt t+1 must start with
    prompt t followed by action t, so that the behaviour log-probabilities were computed
    on exactly this context.
    """
    steps = traj.steps
    if not steps:
        raise ValueError(f"trajectory of task {traj.task_id!r} has no steps")
    for t in range(len(steps) - 1):
        prefix = np.concatenate([steps[t].prompt_ids, steps[t].action_ids])
        nxt = steps[t + 1].prompt_ids
        if len(nxt) < len(prefix) or not np.array_equal(nxt[:len(prefix)], prefix):
            raise ValueError(
                "conversation samples need prompts that carry the full history "
                f"(agent.history=-1); step {t + 1} of task {traj.task_id!r} does not extend "
                f"step {t}'s prompt and action")
    last = steps[-1]
    ids = np.concatenate([last.prompt_ids, last.action_ids])
    tpos, lps, advs = [], [], []
    for t, step in enumerate(steps):
        k = len(step.action_ids)
        tpos.append(len(step.prompt_ids) - 1 + np.arange(k))
        lps.append(step.logprobs)
        advs.append(np.full(k, advantages[t], np.float32))
    frames = [s.frame for s in steps]
    return make_sample(ids, frames, np.concatenate(tpos), np.concatenate(lps),
                       np.concatenate(advs), model_config, fit_mode)


def round_up(n: int, multiple: int) -> int:
    """Bucketed size >= n: a multiple of `multiple`, and for large n a multiple of 1/8 of
    the next power of two, so growing lengths (multi-turn prompts) compile few shapes."""
    step = max(multiple, (1 << max(0, (n - 1).bit_length())) // 8)
    return max(multiple, -(-n // step) * step)


@dataclasses.dataclass(frozen=True)
class ImageSlots:
    """Static image layout of one batch.

    When every image has the same grid (`grid` set), images go batched as
    [count, P, patch_dim]: the vision tower then attends within each image at N*P^2 cost
    (measured ~18x faster than one flat block-diagonal sequence). Otherwise patches go
    flat as [patches, patch_dim] with per-image segment ids, as transformers lays them out.
    Unused slots are zero padding; their merged tokens are never gathered.
    """

    grid: tuple[int, int, int] | None  # shared (t, h, w) grid, or None for the flat layout
    count: int  # image slots (batched layout)
    patches: int  # patch slots (flat layout)

    @staticmethod
    def fit(grids: np.ndarray, max_images: int, max_patches: int, count_multiple: int = 8,
            patch_multiple: int = 64) -> "ImageSlots":
        """The layout for batches of at most `max_images` images / `max_patches` patches,
        whose grids all come from `grids` ([N, 3])."""
        if not len(grids):
            return ImageSlots(None, 0, 0)
        uniq = np.unique(np.asarray(grids), axis=0)
        if len(uniq) == 1:
            return ImageSlots(tuple(int(x) for x in uniq[0]),
                              round_up(max_images, count_multiple), 0)
        return ImageSlots(None, 0, round_up(max_patches, patch_multiple))


def pack_images(pixel_list: Sequence[np.ndarray], grid: np.ndarray, slots: ImageSlots,
                model_config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches of a batch's images -> (pixel_values, vision_pos_ids, vision_segment_ids)
    in the static layout `slots`."""
    v = model_config.vision
    merge = v.spatial_merge_size
    pix = np.concatenate(pixel_list) if len(pixel_list) else np.zeros((0, v.patch_dim), np.float32)
    if slots.grid is not None:
        per = int(np.prod(slots.grid))
        n = len(grid)
        if n > slots.count or (n and not (grid == np.asarray(slots.grid)).all()):
            raise ValueError(f"{n} images of grids {np.unique(grid, axis=0).tolist()} do not fit "
                             f"{slots}")
        pixel_values = np.zeros((slots.count, per, v.patch_dim), np.float32)
        pixel_values[:n] = pix.reshape(n, per, v.patch_dim)
        vpos = np.broadcast_to(qinputs.vision_position_ids(np.asarray([slots.grid]), merge),
                               (slots.count, per, 2))
        return pixel_values, np.ascontiguousarray(vpos), np.zeros((slots.count, per), np.int32)
    p = slots.patches
    used = pix.shape[0]
    if used > p:
        raise ValueError(f"{used} image patches exceed the batch layout's {p}")
    pixel_values = np.zeros((p, v.patch_dim), np.float32)
    vpos = np.zeros((p, 2), np.int32)
    seg = np.zeros((p,), np.int32)
    if used:
        pixel_values[:used] = pix
        vpos[:used] = qinputs.vision_position_ids(grid, merge)
        seg[:used] = qinputs.vision_segment_ids(grid)
        seg[used:] = seg[used - 1] + 1
    return pixel_values, vpos, seg


@dataclasses.dataclass(frozen=True)
class BatchShape:
    """Static shapes of one batch: the compile key of the train step."""

    batch: int  # samples (padded with zero-weight samples)
    seq: int  # tokens per sample (left-padded)
    targets: int  # action-token slots per sample
    images: ImageSlots  # the image layout of one shard's rows
    # > 1: shard-major batch, `shards` blocks of batch / shards rows, each with its own
    # images (`images` per block), so each device's rows are a batch of their own
    # (train/fixed_order.py); 1: the images of all rows in one block, row-major
    shards: int = 1

    @staticmethod
    def fit(samples: Sequence[Sample], batch: int, seq_multiple: int = 16,
            shards: int = 1) -> "BatchShape":
        """The smallest bucketed shape that holds any `batch` of `samples` (in `shards`
        blocks of rows, each with its own image slots)."""
        if shards < 1 or batch % shards:
            raise ValueError(f"a batch of {batch} rows does not split into {shards} shards")
        seq = round_up(max(s.length for s in samples), seq_multiple)
        k = max(len(s.target_pos) for s in samples)
        # Worst case of any block of `rows` samples (batches may repeat samples).
        rows = batch // shards
        imgs = max(len(x.image_grid_thw) for x in samples)
        patches = max(x.pixel_values.shape[0] for x in samples)
        grids = np.concatenate([x.image_grid_thw for x in samples])
        return BatchShape(batch, seq, k, ImageSlots.fit(grids, rows * imgs, rows * patches),
                          shards)


def target_arrays(samples: Sequence[Sample], batch: int, targets: int,
                  fields: tuple[str, ...]) -> dict:
    """The per-sample action-token arrays [batch, targets] of a batch, whatever its token
    layout: targets/loss_mask/old_logprobs/advantages and each optional field in `fields`;
    rows past len(samples) are zero-weight padding."""
    b, k = batch, targets
    out = dict(targets=np.zeros((b, k), np.int32), loss_mask=np.zeros((b, k), np.float32),
               old_logprobs=np.zeros((b, k), np.float32), advantages=np.zeros((b, k), np.float32))
    out.update({f: np.zeros((b, k), np.float32) for f in fields})
    for i, s in enumerate(samples):
        kk = len(s.target_pos)
        out["targets"][i, :kk] = s.input_ids[s.target_pos + 1]
        out["loss_mask"][i, :kk] = 1.0
        out["old_logprobs"][i, :kk] = s.old_logprobs
        out["advantages"][i, :kk] = s.advantages
        for f in fields:
            if getattr(s, f) is None:
                raise ValueError(f"collate: a sample has no {f} (the batch's fields: {fields})")
            out[f][i, :kk] = getattr(s, f)
    return out


def collate(samples: Sequence[Sample], shape: BatchShape, model_config, pad_id: int = 0,
            fields: tuple[str, ...] | None = None) -> dict:
    """Left-pads samples into fixed-shape arrays; missing rows become zero-weight padding.

    Returns input_ids/attention_mask [B,T], position_ids [3,B,T], image arrays in the
    layout of `shape.images` (see `pack_images`), target_pos/targets/loss_mask/old_logprobs/
    advantages [B,K], and each optional field in `fields` [B,K] (None: those the first
    sample carries). With `shape.shards` > 1, row block j (and image block j) is block j's
    samples collated on their own.
    """
    if fields is None:
        fields = samples[0].optional_fields() if samples else ()
    if shape.shards > 1:
        return _collate_shard_major(samples, shape, model_config, pad_id, fields)
    b, t, k = shape.batch, shape.seq, shape.targets
    if len(samples) > b:
        raise ValueError(f"{len(samples)} samples do not fit a batch of {b}")
    ids = np.full((b, t), pad_id, np.int32)
    mask = np.zeros((b, t), np.int32)
    pos = np.zeros((3, b, t), np.int32)
    tpos = np.zeros((b, k), np.int32)
    for i, s in enumerate(samples):
        n = s.length
        if n > t or len(s.target_pos) > k:
            raise ValueError(f"sample of {n} tokens / {len(s.target_pos)} targets exceeds "
                             f"the batch shape {shape}")
        off = t - n
        ids[i, off:] = s.input_ids
        mask[i, off:] = 1
        pos[:, i, off:] = s.position_ids
        tpos[i, :len(s.target_pos)] = s.target_pos + off
    grid = (np.concatenate([s.image_grid_thw for s in samples]) if samples
            else np.zeros((0, 3), np.int32))
    pixel_values, vpos, seg = pack_images([s.pixel_values for s in samples], grid,
                                          shape.images, model_config)
    out = dict(input_ids=ids, attention_mask=mask, position_ids=pos,
               pixel_values=pixel_values, vision_pos_ids=vpos, vision_segment_ids=seg,
               target_pos=tpos)
    out.update(target_arrays(samples, b, k, fields))
    return out


def _collate_shard_major(samples, shape: BatchShape, model_config, pad_id, fields) -> dict:
    """`collate` of each block of batch / shards rows, concatenated block after block
    (position_ids along its batch dim 1, everything else along dim 0)."""
    if len(samples) > shape.batch:
        raise ValueError(f"{len(samples)} samples do not fit a batch of {shape.batch}")
    rows = shape.batch // shape.shards
    block = dataclasses.replace(shape, batch=rows, shards=1)
    parts = [collate(samples[j * rows:(j + 1) * rows], block, model_config, pad_id, fields)
             for j in range(shape.shards)]
    return {key: np.concatenate([p[key] for p in parts], axis=int(key == "position_ids"))
            for key in parts[0]}
