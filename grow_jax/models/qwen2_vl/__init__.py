"""Qwen2-VL in Flax NNX: config, host-side inputs, model, HF key table."""

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig, TextConfig, VisionConfig
from grow_jax.models.qwen2_vl.inputs import (
    get_rope_index,
    images_to_patches,
    vision_position_ids,
    vision_segment_ids,
)
from grow_jax.models.qwen2_vl.modeling import Qwen2VL, init_cache

__all__ = [
    "Qwen2VL",
    "Qwen2VLConfig",
    "TextConfig",
    "VisionConfig",
    "get_rope_index",
    "images_to_patches",
    "init_cache",
    "vision_position_ids",
    "vision_segment_ids",
]
