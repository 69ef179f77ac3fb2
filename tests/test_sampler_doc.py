"""benchmarks/sampler.py renders docs/performance.md's Sampler section from its stored
results JSON: the section in the docs is what the stored run renders (no number typed in),
and the sentence for a PyTorch bf16 user is computed from the same table."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import sampler  # noqa: E402


def _stored():
    with open(sampler.RESULTS) as f:
        return json.load(f)


def test_section_from_stored_results_is_the_docs_section():
    text = sampler.render(_stored())
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        assert text.strip() in f.read(), "docs/performance.md: rerun benchmarks/sampler.py"


def test_torch_bf16_user_line_takes_the_faster_jax_side():
    r = _stored()
    size = next(iter(r["sizes"]))
    x = r["sizes"][size]
    x["jax_f32"]["e2e_tokens_per_s"], x["jax_bf16"]["e2e_tokens_per_s"] = 100.0, 300.0
    x["jax_bf16"]["decode_tokens_per_s"] = 400.0
    x["torch_bf16"]["e2e_tokens_per_s"], x["torch_bf16"]["decode_tokens_per_s"] = 200.0, 100.0
    r["settings"]["machine"] = "Some CPU (avx2, amx_bf16), 2 CPUs"
    line = sampler._torch_bf16_user(r)[1]
    assert "(with AMX)" in line
    assert f"{size}: torch bf16 `generate` 200.0 tok/s" in line
    assert "(jax_bf16) 300.0 = 1.50x (decode 4.00x)" in line
    for s in r["sizes"].values():
        del s["torch_bf16"]
    assert sampler._torch_bf16_user(r) == []
