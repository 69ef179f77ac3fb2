"""Episode GIFs: each frame upscaled, with the instruction and the step's action drawn on it."""

from __future__ import annotations

import os
from collections.abc import Sequence

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from grow_jax.io_utils import atomic_path


def unique_path(path: str) -> str:
    """`path`, or `stem_1.ext`, `stem_2.ext`, ... if it exists (never overwrite silently)."""
    if not os.path.exists(path):
        return path
    stem, ext = os.path.splitext(path)
    k = 1
    while os.path.exists(f"{stem}_{k}{ext}"):
        k += 1
    return f"{stem}_{k}{ext}"


def annotate_frame(frame: np.ndarray, lines: Sequence[str], min_size: int = 256) -> np.ndarray:
    """Upscales (nearest) so the short side is >= min_size and adds a text band below."""
    frame = np.asarray(frame, np.uint8)
    h, w = frame.shape[:2]
    scale = max(1, -(-min_size // min(h, w)))
    img = Image.fromarray(frame).resize((w * scale, h * scale), Image.NEAREST)
    font = ImageFont.load_default()
    line_h = 12
    band = Image.new("RGB", (img.width, line_h * len(lines) + 4), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    for k, text in enumerate(lines):
        draw.text((3, 2 + k * line_h), text, fill=(255, 255, 255), font=font)
    out = Image.new("RGB", (img.width, img.height + band.height))
    out.paste(img, (0, 0))
    out.paste(band, (0, img.height))
    return np.asarray(out)


def write_episode_gif(
    path: str,
    frames: Sequence[np.ndarray],
    instruction: str,
    actions: Sequence[str],
    success: bool,
    fps: float = 4.0,
) -> str:
    """Writes the episode; frame t shows actions[t] (the action taken from it; the final
    frame, with no action, shows the outcome). Returns the path actually written."""
    if not frames:
        raise ValueError(f"episode for {path!r} has no frames")
    if len(actions) not in (len(frames), len(frames) - 1):
        raise ValueError(f"{len(actions)} actions for {len(frames)} frames: expected "
                         f"{len(frames) - 1} or {len(frames)}")  # fmt: skip
    outcome = "success" if success else "failure"
    images = []
    for t, frame in enumerate(frames):
        act = actions[t] if t < len(actions) else f"end: {outcome}"
        images.append(annotate_frame(frame, [instruction, f"t={t} {act}"]))
    path = unique_path(path)
    with atomic_path(path) as tmp:  # a kill leaves no half-written GIF
        imageio.mimsave(tmp, images, format="GIF", duration=1000.0 / fps, loop=0)
    return path
