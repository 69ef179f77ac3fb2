"""Bringing env frames to the sizes the vision tower accepts (host-side numpy)."""

from __future__ import annotations

import numpy as np


def fit_to_grid(image: np.ndarray, factor: int, mode: str = "pad") -> np.ndarray:
    """Returns `image` (HWC) with height and width rounded up to multiples of `factor`.

    `factor` is patch_size * spatial_merge_size. "pad" adds black rows/columns at the
    bottom/right, which keeps pixel-art frames (BabyAI, Crafter) crisp and aligned with the
    patch grid; "resize" rescales with PIL bicubic like the Hugging Face processor does.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an HWC image, got shape {image.shape}")
    h, w = image.shape[:2]
    th, tw = -(-h // factor) * factor, -(-w // factor) * factor
    if (th, tw) == (h, w):
        return image
    if mode == "pad":
        out = np.zeros((th, tw, image.shape[2]), image.dtype)
        out[:h, :w] = image
        return out
    if mode == "resize":
        from PIL import Image

        return np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))
    raise ValueError(f"image fit mode must be 'pad' or 'resize', got {mode!r}")
