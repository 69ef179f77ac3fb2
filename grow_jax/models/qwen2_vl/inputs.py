"""Host-side (numpy) input preparation for Qwen2-VL.

Everything data-dependent lives here so the jitted model sees only static shapes:
M-RoPE position ids, vision patch coordinates / segment ids, and image -> patch flattening.
Each function reproduces what transformers 5.x computes for Qwen2-VL.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig, VisionConfig

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _grid(grid_thw) -> np.ndarray:
    g = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    return g


def num_image_tokens(image_grid_thw, merge: int) -> np.ndarray:
    """Merged tokens per image: t*h*w / merge^2, int64 [N]."""
    return _grid(image_grid_thw).prod(-1) // (merge * merge)


def get_rope_index(
    input_ids,
    image_grid_thw=None,
    attention_mask=None,
    config: Qwen2VLConfig | None = None,
    video_grid_thw=None,
) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids [3,B,T] int32 and rope deltas [B] int32, as transformers computes.

    Text tokens count up by one on all three axes; each run of image (video) tokens takes
    the next grid of `image_grid_thw` (`video_grid_thw`), in row-major order over the batch,
    and gets (t, h, w) coordinates offset by the running position; the next text token
    continues from max(h, w)/merge past the vision start. Padded positions (mask 0) get 0,
    as in transformers 5.x. rope_deltas = max position + 1 - number of valid tokens, so the
    position of a decode token is (valid tokens before it) + delta.
    """
    if config is None:
        raise ValueError("get_rope_index needs the Qwen2VLConfig (token ids, merge size)")
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {ids.shape}")
    B, T = ids.shape
    mask = np.ones((B, T), bool) if attention_mask is None else np.asarray(attention_mask) != 0
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
    merge = config.vision.spatial_merge_size
    kinds = np.zeros((B, T), np.int8)
    kinds[ids == config.image_token_id] = 1
    kinds[ids == config.video_token_id] = 2
    grids = {
        1: _grid(image_grid_thw) if image_grid_thw is not None else np.zeros((0, 3)),
        2: _grid(video_grid_thw) if video_grid_thw is not None else np.zeros((0, 3)),
    }
    used = {1: 0, 2: 0}
    names = {1: "image_grid_thw", 2: "video_grid_thw"}

    position_ids = np.zeros((3, B, T), np.int64)
    deltas = np.zeros((B,), np.int64)
    for b in range(B):
        valid = mask[b]
        kind = kinds[b][valid]
        kind_bytes = kind.tobytes()
        row_grids = []
        for k, c in zip((1, 2), _vision_runs(kind_bytes)):
            if used[k] + c > len(grids[k]):
                raise ValueError(
                    f"row {b}: more runs of {'image' if k == 1 else 'video'} "
                    f"tokens than entries in {names[k]}"
                )
            row_grids.append(tuple(map(tuple, grids[k][used[k] : used[k] + c].tolist())))
            used[k] += c
        try:
            pos = _row_positions(kind_bytes, row_grids[0], row_grids[1], merge)
        except ValueError as e:
            raise ValueError(f"row {b}: {e}") from None
        position_ids[:, b, valid] = pos
        deltas[b] = (pos.max() + 1 - kind.size) if kind.size else 0
    return position_ids.astype(np.int32), deltas.astype(np.int32)


@functools.lru_cache(maxsize=4096)
def _vision_runs(kind_bytes: bytes) -> tuple[int, int]:
    """(image runs, video runs) in one unpadded row's token kinds (cached like its positions)."""
    kind = np.frombuffer(kind_bytes, np.int8)
    if not kind.size:
        return 0, 0
    run_kinds = kind[np.flatnonzero(np.r_[True, kind[1:] != kind[:-1]])]
    return int((run_kinds == 1).sum()), int((run_kinds == 2).sum())


@functools.lru_cache(maxsize=4096)
def _row_positions(kind_bytes: bytes, image_grids: tuple, video_grids: tuple, merge: int):
    """[3, n] positions of one unpadded row (cached: RL batches repeat the same layout)."""
    kind = np.frombuffer(kind_bytes, np.int8)
    n = kind.size
    if not kind.any():  # text only: plain 0..n-1 on all axes
        return np.broadcast_to(np.arange(n), (3, n))
    grids = {1: iter(image_grids), 2: iter(video_grids)}
    starts = np.flatnonzero(np.r_[True, kind[1:] != kind[:-1]])
    ends = np.r_[starts[1:], n]
    pieces = []
    cur = 0
    for s, e in zip(starts, ends):
        k = int(kind[s])
        if k == 0:
            pieces.append(np.broadcast_to(np.arange(e - s) + cur, (3, e - s)))
            cur += e - s
            continue
        t, h, w = next(grids[k])
        lt, lh, lw = t, h // merge, w // merge
        if lt * lh * lw != e - s:
            raise ValueError(
                f"a run of {e - s} vision tokens does not match grid {(t, h, w)} "
                f"({lt * lh * lw} merged tokens)"
            )
        tt, hh, ww = np.meshgrid(np.arange(lt), np.arange(lh), np.arange(lw), indexing="ij")
        pieces.append(np.stack([tt, hh, ww]).reshape(3, -1) + cur)
        cur += max(h, w) // merge
    return np.concatenate(pieces, axis=1)


def vision_position_ids(image_grid_thw, merge: int) -> np.ndarray:
    """(h, w) patch coordinates [P, 2] int32, in the block-major order of the patches."""
    out = []
    for t, h, w in _grid(image_grid_thw):
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hh = hh.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        ww = ww.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hh, ww], -1), (t, 1)))
    if not out:
        return np.zeros((0, 2), np.int32)
    return np.concatenate(out).astype(np.int32)


def vision_segment_ids(image_grid_thw) -> np.ndarray:
    """Attention segment of each patch [P] int32: one segment per (image, frame) (= cu_seqlens)."""
    g = _grid(image_grid_thw)
    per_frame = np.repeat(g[:, 1] * g[:, 2], g[:, 0])
    return np.repeat(np.arange(len(per_frame)), per_frame).astype(np.int32)


def images_to_patches(
    images: Sequence[np.ndarray],
    config: Qwen2VLConfig | VisionConfig,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> tuple[np.ndarray, np.ndarray]:
    """HWC images -> (pixel_values float32 [P, C*tp*ps*ps], image_grid_thw int32 [N, 3]).

    Same values and patch order as transformers' Qwen2VLImageProcessor (PIL backend) when it
    does not resize. uint8 images are rescaled by 1/255; float images must already be in
    [0, 1]. H and W must be multiples of patch_size * spatial_merge_size (resizing is the
    caller's job). Consecutive images of one shape and dtype are converted as one stacked
    array (a rollout turn's frames all share a shape), not one by one.
    """
    vc = config.vision if isinstance(config, Qwen2VLConfig) else config
    ps, m, tp, C = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size, vc.in_chans
    mean32 = np.asarray(mean, np.float32)
    std32 = np.asarray(std, np.float32)
    images = [np.asarray(img) for img in images]
    if not images:
        raise ValueError("images_to_patches: no images given")
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[-1] != C:
            raise ValueError(f"image {i}: expected HWC with C={C}, got shape {img.shape}")
        if img.shape[0] % (ps * m) or img.shape[1] % (ps * m):
            raise ValueError(
                f"image {i}: height and width must be multiples of patch_size*spatial_merge_size "
                f"= {ps * m}, got {img.shape[0]}x{img.shape[1]}; resize it first"
            )
        if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
            raise ValueError(f"image {i}: dtype {img.dtype} not supported (uint8 or float)")
    patches, grids = [], []
    for _, run in itertools.groupby(images, key=lambda a: (a.shape, a.dtype)):
        x = np.stack(list(run))  # [N, H, W, C]: consecutive images of one shape and dtype
        if x.dtype == np.uint8:
            x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
        else:
            x = x.astype(np.float32)
        n, H, W = x.shape[:3]
        gh, gw = H // ps, W // ps
        x = ((x - mean32) / std32).transpose(0, 3, 1, 2)  # NCHW
        x = x.reshape(n, C, gh // m, m, ps, gw // m, m, ps).transpose(0, 2, 5, 3, 6, 1, 4, 7)
        x = np.broadcast_to(x[:, :, :, :, :, :, None], (*x.shape[:6], tp, ps, ps))
        patches.append(x.reshape(n * gh * gw, C * tp * ps * ps))
        grids += [(1, gh, gw)] * n
    return np.concatenate(patches).astype(np.float32), np.asarray(grids, np.int32)
