"""Qwen2VLConfig: validation, presets, and transformers config.json in both layouts."""

from __future__ import annotations

import json

import pytest

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

LEGACY_7B = {  # the flat layout of the hub's Qwen2-VL-7B-Instruct config.json
    "architectures": ["Qwen2VLForConditionalGeneration"],
    "model_type": "qwen2_vl",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vision_config": {
        "depth": 32,
        "embed_dim": 1280,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "hidden_size": 1536,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}


def test_legacy_hub_layout_gives_the_7b_preset():
    assert Qwen2VLConfig.from_hf(LEGACY_7B) == Qwen2VLConfig.qwen2_vl_7b()


@pytest.mark.parametrize(
    "config",
    [
        Qwen2VLConfig.tiny(),
        Qwen2VLConfig.tiny(tie_word_embeddings=True, num_key_value_heads=1),
        Qwen2VLConfig.qwen2_vl_7b(),
    ],
)
def test_to_hf_loads_in_transformers_and_round_trips(config, tmp_path):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf()))
    hf = transformers.Qwen2VLConfig.from_pretrained(tmp_path)
    assert hf.text_config.hidden_size == config.text.hidden_size
    assert hf.tie_word_embeddings == config.text.tie_word_embeddings
    assert list(hf.text_config.rope_parameters["mrope_section"]) == list(config.text.mrope_section)
    assert Qwen2VLConfig.from_hf(hf.to_dict()) == config
    assert Qwen2VLConfig.from_hf(config.to_hf()) == config


def test_validation_messages():
    with pytest.raises(ValueError, match="mrope_section .* summing to head_dim/2 = 8"):
        Qwen2VLConfig.tiny(mrope_section=(2, 2, 2))
    with pytest.raises(ValueError, match="divisible by num_key_value_heads"):
        Qwen2VLConfig.tiny(num_key_value_heads=3)
    with pytest.raises(ValueError, match="unsupported model_type 'llava'"):
        Qwen2VLConfig.from_hf({**LEGACY_7B, "model_type": "llava"})
    with pytest.raises(ValueError, match="unknown override 'foo'"):
        Qwen2VLConfig.tiny(foo=1)
    with pytest.raises(ValueError, match="missing vision_config.depth"):
        Qwen2VLConfig.from_hf({**LEGACY_7B, "vision_config": {}})
