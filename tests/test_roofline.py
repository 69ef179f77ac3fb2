"""grow_jax.roofline: the accelerator bounds in docs/performance.md come from the script."""

import math

import pytest

from grow_jax import plan, roofline
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

DOC = plan.__file__.rsplit("/grow_jax/", 1)[0] + "/docs/performance.md"


@pytest.mark.slow
def test_doc_section_is_in_sync_with_the_script():
    """Rerun `python scripts/roofline_docs.py` when this fails."""
    body = roofline.section()
    text = open(DOC).read()
    assert body.rstrip("\n") in text, "docs/performance.md: run python scripts/roofline_docs.py"


def test_decode_bound_is_weight_bytes_over_bandwidth_at_batch_one():
    cfg = Qwen2VLConfig.tiny(tie_word_embeddings=False)
    t = cfg.text
    chip = roofline.Chip("x", 1e30, 1e12, 1e11, "test")
    layer = t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
    layer += t.num_attention_heads * t.head_dim * t.hidden_size + 3 * t.hidden_size * \
        t.intermediate_size
    weights = t.num_hidden_layers * layer + 2 * t.hidden_size * t.vocab_size
    r = roofline.decode_bound(cfg, 1, 0, chip, weight_bytes=2)
    assert math.isclose(r["tokens_per_s"], 1e12 / (2 * weights)) and r["bound"] == "HBM"


def test_train_flops_are_six_n_per_token_without_attention_or_vision():
    """Text-only, one action row per sample and every row at the logits: 6 x params x
    tokens (the usual count) up to the embedding and last-layer terms."""
    cfg = Qwen2VLConfig.tiny(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                             vocab_size=1024)
    dims = plan.BatchDims(batch=4, seq=64, targets=64, images=0, patches=0)
    t = cfg.text
    d, hd = t.hidden_size, t.head_dim
    per_layer = d * (t.num_attention_heads * 2 + 2 * t.num_key_value_heads) * hd + 3 * d * \
        t.intermediate_size
    n = t.num_hidden_layers * per_layer + d * t.vocab_size
    tokens = dims.batch * dims.seq
    attn = 4 * dims.seq * t.num_attention_heads * hd * t.num_hidden_layers * tokens
    assert math.isclose(3 * roofline.forward_flops(cfg, dims), 6 * n * tokens + 3 * attn,
                        rel_tol=1e-9)
    mesh = plan.MeshShape(1, 1, 1)
    chip = roofline.CHIPS["H100"]
    r = roofline.train_update(cfg, mesh, dims, 1, False, chip)
    assert r["comm_bytes"] == 0 and r["hw_flops"] == r["model_flops"]
    assert 0 < r["mfu_serial"] <= r["mfu_overlap"] <= 1
    remat = roofline.train_update(cfg, mesh, dims, 1, True, chip)
    assert math.isclose(remat["hw_flops"], 4 / 3 * r["hw_flops"])
