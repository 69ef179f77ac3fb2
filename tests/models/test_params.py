"""HF <-> NNX key table: round trips, legacy names, and error reporting."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from grow_jax.models.qwen2_vl import params as qp
from grow_jax.models.qwen2_vl.modeling import Qwen2VL

from ._tiny import TINY_CONFIGS, tiny


def _fake_hf(config, seed=0):
    rng = np.random.default_rng(seed)
    return {
        k: rng.standard_normal(s).astype(np.float32)
        for k, s in qp.expected_hf_shapes(config).items()
    }


@pytest.mark.parametrize("name", ["gqa2_untied", "mha_tied"])
def test_round_trip_is_bit_identical(name):
    c = tiny(name)
    hf = _fake_hf(c)
    for key, arr in hf.items():
        path, nnx_arr = qp.hf_to_nnx(key, arr, c)
        back_key, back = qp.nnx_to_hf(path, nnx_arr, c)
        assert back_key == key
        assert back.dtype == arr.dtype and np.array_equal(back, arr), key
    pure = qp.state_from_hf(hf, c)
    out = qp.state_to_hf(pure, c)
    assert out.keys() == hf.keys()
    assert all(np.array_equal(out[k], hf[k]) for k in hf)


def test_state_matches_model_tree_and_layouts():
    c = tiny("gqa2_untied")
    hf = _fake_hf(c)
    model = Qwen2VL(c, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, qp.state_from_hf(hf, c))
    nnx.update(model, state)
    q = hf["model.language_model.layers.1.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(model.layers[1].self_attn.q_proj.kernel[...], q.T)
    conv = hf["model.visual.patch_embed.proj.weight"]  # [out, C, tp, ps, ps]
    np.testing.assert_array_equal(
        model.visual.patch_embed.kernel[...], conv.reshape(conv.shape[0], -1).T
    )
    np.testing.assert_array_equal(
        model.visual.merger.mlp2.bias[...], hf["model.visual.merger.mlp.2.bias"]
    )


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_expected_shapes_match_transformers(name):
    torch = pytest.importorskip("torch")
    from ._tiny import torch_model

    c = tiny(name)
    sd = {k: tuple(v.shape) for k, v in torch_model(c).state_dict().items()}
    if c.text.tie_word_embeddings:
        assert sd.pop("lm_head.weight") == sd["model.language_model.embed_tokens.weight"]
    assert qp.expected_hf_shapes(c) == sd
    del torch


def test_legacy_hub_names_accepted():
    assert (
        qp.canonical_hf_key("visual.blocks.0.attn.qkv.weight")
        == "model.visual.blocks.0.attn.qkv.weight"
    )
    assert (
        qp.canonical_hf_key("model.layers.3.mlp.up_proj.weight")
        == "model.language_model.layers.3.mlp.up_proj.weight"
    )
    assert (
        qp.canonical_hf_key("model.embed_tokens.weight")
        == "model.language_model.embed_tokens.weight"
    )
    assert qp.canonical_hf_key("model.norm.weight") == "model.language_model.norm.weight"
    assert qp.canonical_hf_key("lm_head.weight") == "lm_head.weight"
    c = tiny()
    hf = _fake_hf(c)
    legacy = {}
    for k, v in hf.items():
        k = k.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        legacy[k] = v
    new, old = qp.state_from_hf(hf, c), qp.state_from_hf(legacy, c)
    assert qp.state_to_hf(old, c).keys() == hf.keys()
    np.testing.assert_array_equal(
        new["layers"][0]["mlp"]["up_proj"]["kernel"], old["layers"][0]["mlp"]["up_proj"]["kernel"]
    )


def test_tied_lm_head_is_skipped():
    c = tiny("mha_tied")
    assert "lm_head.weight" not in qp.expected_hf_shapes(c)
    assert qp.hf_to_nnx("lm_head.weight", np.zeros((512, 64)), c) is None


def test_unknown_key_and_bad_shape_raise_naming_the_tensor():
    c = tiny()
    with pytest.raises(KeyError, match="model.visual.blocks.0.attn.qkv.scales"):
        qp.hf_to_nnx("model.visual.blocks.0.attn.qkv.scales", np.zeros(3), c)
    with pytest.raises(
        ValueError, match=r"q_proj.weight.*expected shape \(64, 64\), got \(64, 63\)"
    ):
        qp.hf_to_nnx("model.language_model.layers.0.self_attn.q_proj.weight", np.zeros((64, 63)), c)
    with pytest.raises(KeyError, match="layers.7.mlp.up_proj.weight"):  # only 2 layers
        qp.hf_to_nnx("model.language_model.layers.7.mlp.up_proj.weight", np.zeros((128, 64)), c)
    with pytest.raises(KeyError, match="unknown NNX path 'layers.0.mlp.fc9.kernel'"):
        qp.nnx_to_hf(("layers", 0, "mlp", "fc9", "kernel"), np.zeros((2, 2)), c)


def test_state_from_hf_collects_all_errors():
    c = tiny()
    hf = _fake_hf(c)
    del hf["model.language_model.norm.weight"]
    hf["model.visual.merger.mlp.0.bias"] = np.zeros(3, np.float32)
    hf["model.extra.weight"] = np.zeros(1, np.float32)
    hf["visual.merger.ln_q.bias"] = hf["model.visual.merger.ln_q.bias"]
    with pytest.raises(ValueError) as e:
        qp.state_from_hf(hf, c)
    msg = str(e.value)
    assert msg.startswith("4 problem(s)")
    for part in (
        "missing tensor 'model.language_model.norm.weight'",
        "merger.mlp.0.bias",
        "model.extra.weight",
        "duplicate tensor 'model.visual.merger.ln_q.bias'",
    ):
        assert part in msg, part


def test_state_from_hf_casts_to_param_dtype():
    c = tiny().replace(param_dtype="bfloat16")
    pure = qp.state_from_hf(_fake_hf(c), c)
    assert pure["norm"]["scale"].dtype.name == "bfloat16"
