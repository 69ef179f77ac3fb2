"""Shared tiny Qwen2-VL configs and helpers for the model tests (import as `from ._tiny import ...`)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from grow_jax.models.qwen2_vl import params as qparams
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL

# name -> overrides of Qwen2VLConfig.tiny(); covers GQA ratios 1, 2, 4 and tied/untied heads.
TINY_CONFIGS = {
    "gqa2_untied": {},
    "mha_tied": {"num_key_value_heads": 4, "tie_word_embeddings": True},
    "gqa4_untied": {
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "vision_depth": 1,
        "vision_num_heads": 2,
    },
    "gqa4_tied": {
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "tie_word_embeddings": True,
        "vision_mlp_ratio": 4,
    },
}


def tiny(name: str = "gqa2_untied") -> Qwen2VLConfig:
    return Qwen2VLConfig.tiny(**TINY_CONFIGS[name])


def torch_model(config: Qwen2VLConfig, seed: int = 0):
    """A random transformers Qwen2VLForConditionalGeneration (eval, float32, eager attention)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    hf_cfg = transformers.Qwen2VLConfig.from_dict(config.to_hf())
    hf_cfg._attn_implementation = "eager"
    model = transformers.Qwen2VLForConditionalGeneration(hf_cfg).eval().float()
    with torch.no_grad():  # HF init leaves norms at 1/0 and biases at 0: randomise all
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def torch_state(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def nnx_from_torch(config: Qwen2VLConfig, tmodel) -> Qwen2VL:
    model = Qwen2VL(config, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, qparams.state_from_hf(torch_state(tmodel), config))
    nnx.update(model, state)
    return model


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
