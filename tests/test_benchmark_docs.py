"""The benchmark sections of docs/performance.md are what their scripts render from the
stored results JSON (no number typed in by hand; the benchmarks themselves are too slow for
CI, and the peers' need their own virtualenvs): benchmarks/peers.py, sampler.py, train_step.py,
rollout.py (one stored file per CPU kind) and goals.py."""

import importlib
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _stored(mod):
    """The peers' single results file, or one machine's results of a per-CPU-kind benchmark."""
    if hasattr(mod, "RESULTS"):
        with open(mod.RESULTS) as f:
            return json.load(f)
    return next(iter(_common().stored_results(mod.NAME).values()))


def _common():
    return importlib.import_module("_common")


def _all_stored(name):
    mod = importlib.import_module(name)
    if name == "peers":
        return _stored(mod)
    if name == "goals":
        return mod.stored()
    return _common().stored_results(mod.NAME)


@pytest.mark.parametrize("name", ["peers", "sampler", "train_step", "rollout", "goals"])
def test_section_from_stored_results_is_the_docs_section(name):
    mod = importlib.import_module(name)
    text = mod.section(_all_stored(name))
    assert text.startswith(mod.SECTION + "\n")
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        assert text.strip() in f.read(), f"docs/performance.md: rerun benchmarks/{name}.py"


def test_per_machine_section_has_a_subsection_per_cpu_kind():
    sampler = importlib.import_module("sampler")
    r = _stored(sampler)
    text = sampler.section({"amd-epyc": r, "intel-xeon-amx": r})
    assert text.index("\n### amd-epyc\n") < text.index("\n### intel-xeon-amx\n")
    with pytest.raises(FileNotFoundError, match="benchmarks/sampler.py"):
        sampler.section({})


def test_cpu_kind_keys():
    kind = _common().cpu_kind
    assert kind({"model": "Intel(R) Xeon(R) Processor", "flags": ["avx512f", "amx_tile"]}) \
        == "intel-xeon-amx"
    assert kind({"model": "AMD EPYC", "flags": ["avx2", "avx512f", "avx512_bf16"]}) == "amd-epyc"
    assert kind({"model": "AMD EPYC 7B13 64-Core Processor", "flags": ["avx2"]}) \
        == "amd-epyc-avx2"
    assert kind({"model": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "flags": ["avx512f"]}) \
        == "intel-core"


def test_goals_table_from_hand_numbers():
    """Bars met / not met per kind; a benchmark not run on a kind reads '-'."""
    goals = importlib.import_module("goals")
    sampler = {"sizes": {"100m": {"pairs": {"jax_f32/torch_f32": {"e2e_tokens_per_s": 2.1}}}}}
    rollout = {"rows": [{"envs": 32, "pipe_async": 60.0, "envs_sync": 100.0,
                         "envs_async": 80.0}]}
    train = {"100m": {"speedup_vs": {"grow_jax": {"torch_full_logits": 1.4,
                                                  "torch_action_logits": 1.1},
                                     "grow_jax_packed": {"torch_full_logits": 1.6,
                                                         "torch_action_logits": 1.2}}}}
    text = goals.section({"sampler": {"a": sampler, "b": sampler}, "rollout": {"a": rollout},
                          "train_step": {"b": train}})
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in text.splitlines()}
    assert rows["sampler, ~100M, end to end vs `generate`, f32"].endswith(
        "| >= 2.00x | 2.10x (met) | 2.10x (met) |")
    assert rows["rollout loop at 32 envs, share of the envs' own speed"].endswith(
        "| >= 70% | 60% (not met) | - |")
    assert rows["train step, ~100M, vs torch full logits, f32"].endswith(
        "| - | 1.60x (met) |")
    assert rows["train step, ~100M, vs torch action logits, f32"].endswith(
        "| - | 1.20x (not met) |")


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


def test_peers_grow_jax_side_runs_on_a_tiny_model(tmp_path):
    """The peer benchmark's own side (grow_jax's sampler and train step on the peers' work)
    runs: it is never run in CI with the peers, so a changed signature would otherwise only
    show on a user's machine (it once did: sampler.JaxSide gained a dtype)."""
    import argparse

    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

    peers = importlib.import_module("peers")
    config = Qwen2VLConfig.tiny()
    args = argparse.Namespace(batch=2, new_tokens=3, prompt_min=4, prompt_max=6,
                              train_batch=2, completion_len=2)
    model = peers.write_weights(config, tmp_path)
    ours = peers.Ours(model, config, peers.make_work(config, args, tmp_path))
    tokens = ours.generate()
    assert len(tokens) == 2 and all(len(t) == 3 for t in tokens)
    assert np.isfinite(ours.train())
