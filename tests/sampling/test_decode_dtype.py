"""bf16 decode (`agent.decode_dtype`) and the learner's re-scoring of behaviour logprobs
(`algo.recompute_old_logprobs`): the sampler really runs in bf16, stays close to f32, and
an RL run with it trains on the learner's own logprobs; without the re-scoring it refuses
to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx
from models._tiny import tiny

from grow_jax.models.qwen2_vl.modeling import Qwen2VL
from grow_jax.sampling.generate import Sampler, SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _prompts():
    return [np.random.RandomState(i).randint(1, 400, size=10 + i).astype(np.int32)
            for i in range(5)]


def test_bf16_decode_is_bf16_and_close_to_f32():
    model = Qwen2VL(tiny("gqa2_untied"), rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    sp = SamplingParams(max_new_tokens=8, temperature=1.0)
    rng = jax.random.key(0)
    base = Sampler(model, sp).sample(params, _prompts(), rng=rng)
    f32 = Sampler(model, sp, dtype="float32").sample(params, _prompts(), rng=rng)
    bf16_sampler = Sampler(model, sp, dtype="bfloat16")
    bf16 = bf16_sampler.sample(params, _prompts(), rng=rng)
    for a, b in zip(base[0] + base[1], f32[0] + f32[1]):  # float32 = the model's own dtype
        np.testing.assert_array_equal(a, b)
    assert bf16_sampler.config.dtype == "bfloat16"
    same = [(a == b).all() for a, b in zip(base[0], bf16[0])]
    assert all(same), same  # this tiny model's draws survive the bf16 rounding
    err = max(float(np.abs(a - b).max()) for a, b in zip(base[1], bf16[1]))
    assert 0 < err < 0.02, err  # it is bf16 (not f32), and close to it


SMALL = [
    "--config=configs/tiny_cpu.py", "--config.rl.group_size=4", "--config.rl.seeds_per_group=1",
    "--config.rl.groups_per_iter=2", "--config.rl.iterations=2", "--config.rl.minibatch_size=16",
    "--config.rl.epochs=1", "--config.env.max_steps=4", "--config.eval.episodes=2",
    "--config.eval.num_envs=2", "--config.eval.every=0", "--config.eval.videos=0",
    "--config.sft.steps=5", "--config.checkpoint.async_save=False",
    "--config.logging.tensorboard=False", "--config.logging.progress=False",
    "--config.algo.drop_zero_advantage=False",
]  # fmt: skip


def _main(workdir, *args):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "grow_jax.main", f"--workdir={workdir}",
                           *SMALL, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _train_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["phase"] == "train"]


def test_bf16_decode_needs_the_learner_to_rescore(tmp_path):
    proc = _main(tmp_path / "refused", "--config.agent.decode_dtype=bfloat16")
    assert proc.returncode != 0
    assert "algo.recompute_old_logprobs=True" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "refused" / "metrics.jsonl").exists()  # refused before SFT


@pytest.mark.slow
def test_rescoring_replaces_the_samplers_logprobs(tmp_path):
    """f32 sampler: the learner's logprobs equal the sampler's to float rounding (so the
    re-scoring pairs each sample with its own tokens); bf16 sampler: they differ by the
    bf16 rounding, and that difference is what the run reports."""
    f32, bf16 = tmp_path / "f32", tmp_path / "bf16"
    for wd, dtype in ((f32, "float32"), (bf16, "bfloat16")):
        proc = _main(wd, f"--config.agent.decode_dtype={dtype}",
                     "--config.algo.recompute_old_logprobs=True")
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows_f32, rows_bf16 = _train_rows(f32), _train_rows(bf16)
    assert [r["step"] for r in rows_bf16] == [1, 2]
    for r in rows_f32:
        assert r["samples"] > 0 and r["old_logprob_err_max"] < 1e-4, r
    for r in rows_bf16:
        assert r["samples"] > 0 and 1e-4 < r["old_logprob_err_max"] < 0.1, r
