"""The benchmark sections of docs/performance.md are what their scripts render from the
stored results JSON (no number typed in by hand; the benchmarks themselves are too slow for
CI, and the peers' need their own virtualenvs): benchmarks/peers.py, sampler.py, train_step.py
and rollout.py."""

import importlib
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _stored(mod):
    with open(mod.RESULTS) as f:
        return json.load(f)


@pytest.mark.parametrize("name,render", [("peers", "section"), ("sampler", "render"),
                                         ("train_step", "section"), ("rollout", "render")])
def test_section_from_stored_results_is_the_docs_section(name, render):
    mod = importlib.import_module(name)
    text = getattr(mod, render)(_stored(mod))
    assert text.startswith(mod.SECTION + "\n")
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        assert text.strip() in f.read(), f"docs/performance.md: rerun benchmarks/{name}.py"


def test_peers_section_lists_ran_and_failed_peers():
    peers = importlib.import_module("peers")
    r = _stored(peers)
    ok = next(iter(r["peers"].values()))
    assert "error" not in ok, "the stored run should hold at least one peer that ran"
    r["peers"]["broken"] = {"install_cmd": "pip install broken==1", "what": "a peer",
                            "error": "install failed:\nNo matching distribution"}
    text = peers.section(r)
    assert "**broken did not run here.**" in text and "No matching distribution" in text
    assert f"{ok['speedup_generate']}x" in text and f"{ok['speedup_train']}x" in text


def test_sampler_torch_bf16_user_line_takes_the_faster_jax_side():
    sampler = importlib.import_module("sampler")
    r = _stored(sampler)
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


def test_rollout_cpu_bound_from_hand_numbers():
    """2 CPUs, envs 0.5 ms and the whole loop 1.0 ms of CPU per env step: no schedule beats
    2 / 1.0 ms = 2000 steps/s; with envs alone at 2500, 70% = 1750 steps/s needs the loop at
    <= 2 / 1750 = 1.143 ms, so sampler + prompts at <= 0.643 ms (now 0.500)."""
    rollout = importlib.import_module("rollout")
    (line,) = rollout.cpu_bound({"envs": 32, "envs_sync_cpu_ms": 0.5, "seq_sync_cpu_ms": 1.0},
                                2, 2500.0)
    assert "exceeds 2 / 1.000 ms = 2000 env steps/s = 80% of the envs alone" in line
    assert "<= 1.143 ms of CPU per env step" in line
    assert "sampler and prompts at <= 0.643 ms (now 0.500)" in line
