"""End-to-end through the CLI (2 iterations, tiny model, BabyAI): every estimator (and grow
with the GRPO-CARE bonus) trains; the grow run also has kl_coef > 0, whose KL term is 0 at
the first update and non-zero after it."""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = [
    "--config=configs/tiny_cpu.py",
    "--config.rl.group_size=4", "--config.rl.groups_per_iter=2", "--config.rl.iterations=2",
    "--config.rl.minibatch_size=64", "--config.rl.epochs=1", "--config.env.max_steps=4",
    "--config.sft.steps=0", "--config.eval.episodes=1", "--config.eval.num_envs=1",
    "--config.eval.every=0", "--config.algo.drop_zero_advantage=False",  # see test_trainer_e2e
    "--config.rl.warmup_steps=0",  # one update per iteration: tiny_cpu's warm-up starts at lr 0
    "--config.eval.videos=0", "--config.checkpoint.async_save=False",
    "--config.logging.tensorboard=False", "--config.logging.progress=False",
    "--config.algo.drop_zero_advantage=False",
]


def _train(workdir, *extra):
    """Runs the train mode; returns its train-phase metrics rows."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "grow_jax.main", "--mode=train", f"--workdir={workdir}",
           *TINY, *extra]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["phase"] == "train"]


ESTIMATORS = {  # test id -> flags
    "grow": ("--config.algo.name=grow", "--config.algo.kl_coef=0.1"),  # + the KL reference
    "grpo_traj": ("--config.algo.name=grpo_traj", "--config.agent.history=-1"),
    # + the entropy floor: 2 nats is above log 7 (the grammar's words), so every action word
    # is below it and the hinge is on
    "tgrpo": ("--config.algo.name=tgrpo", "--config.algo.entropy_floor=2.0",
              "--config.algo.entropy_floor_coef=0.1"),
    "gigpo": ("--config.algo.name=gigpo",),
    "ppo": ("--config.algo.name=ppo",),
    "ppo_cot": ("--config.algo.name=ppo_cot", "--config.agent.max_new_tokens=16"),
    "grow_care": ("--config.algo.name=grow", "--config.algo.care_coef=0.5"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_every_estimator_trains_through_the_cli(tmp_path, name):
    """Random-init policy, 2 iterations, zero-advantage samples trained too (the action
    grammar leaves a random policy no format errors to tell its episodes apart)."""
    rows = _train(str(tmp_path), *ESTIMATORS[name])
    if name == "grow":
        # kl_coef > 0, one update per iteration: iteration 1's policy is the reference (kl 0),
        # iteration 2's has moved (kl > 0); the reference was checkpointed at the RL start.
        assert abs(rows[0]["kl"]) < 1e-7 and rows[1]["kl"] > 1e-6, rows
        assert (tmp_path / "reference" / "0").is_dir()
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["samples"] > 0 and math.isfinite(r["loss"]), r
        if name.startswith("ppo"):
            assert math.isfinite(r["vf_loss"]), r
        if name == "tgrpo":  # forced stop tokens are left out: the hinge is 2 - H(word) > 0
            assert 0 < r["entropy_hinge"] <= 2.0 - 1.0, r
        if name == "grow_care":
            assert "care_bonus_frac" in r and (tmp_path / "care_ema" / "2").is_dir()
