"""Stability diagnostics and KL early stopping: unit tests, and one forced large update
through the CLI showing the epochs stop and the metrics reach metrics.jsonl."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from grow_jax.rollout.types import Step, Trajectory
from grow_jax.train.diagnostics import UpdateLog, rollout_diagnostics
from grow_jax.train.optim import learning_rate_schedule, rl_total_updates

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _traj(group, logps, success):
    tr = Trajectory(task_id="t", instruction="go", seed=0, group=group)
    for i, lp in enumerate(logps):
        last = i == len(logps) - 1
        tr.steps.append(Step(frame=np.zeros((2, 2, 3), np.uint8), prompt_ids=np.zeros(2, np.int32),
                             action_ids=np.zeros(2, np.int32),
                             logprobs=np.asarray([lp, 0.0], np.float32),
                             reward=1.0 if (last and success) else 0.0))
    tr.success = success
    return tr


def _algo(**kw):
    from grow_jax.config_utils import base_config

    a = base_config().algo
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_rollout_diagnostics_counts_groups_and_entropy():
    trajs = [_traj(0, [-1.0, -2.0], True), _traj(0, [-1.0, -2.0, -3.0], True),  # all success
             _traj(1, [-1.0], False), _traj(1, [-1.0], False),  # all fail
             _traj(2, [-0.5], True), _traj(2, [-0.5], False)]  # mixed
    d = rollout_diagnostics(trajs, _algo(gamma=0.9))
    assert d["action_entropy"] == pytest.approx(np.mean([1, 2, 1, 2, 3, 1, 1, .5, .5]))
    assert d["token_nll"] == pytest.approx(d["action_entropy"] / 2)
    assert d["frac_groups_all_success"] == pytest.approx(1 / 3)
    assert d["frac_groups_all_fail"] == pytest.approx(1 / 3)
    assert d["frac_groups_uniform"] == pytest.approx(2 / 3)
    assert d["success_group_first_adv"] < 0 < d["success_group_adv_abs"]
    skip = rollout_diagnostics(trajs, _algo(gamma=0.9, grow_uniform_groups="skip"))
    assert skip["success_group_adv_abs"] == 0
    # PPO's advantages need the value head: an all-success group is counted, not estimated
    # (the diagnostics used to call the estimator without values and crash the run)
    ppo = rollout_diagnostics(trajs, _algo(name="ppo"))
    assert ppo["frac_groups_all_success"] == pytest.approx(1 / 3)
    assert "success_group_adv_abs" not in ppo


def test_update_log_means_over_all_epochs_and_stops_on_kl():
    log = UpdateLog(target_kl=0.05)
    assert not log.add({"approx_kl": np.float32(0.01), "loss": 1.0})
    assert log.add({"approx_kl": 0.09, "loss": 3.0})
    s = log.summary()
    assert s["loss"] == 2.0 and s["approx_kl"] == pytest.approx(0.05)
    assert s["approx_kl_max"] == pytest.approx(0.09) and s["approx_kl_last"] == pytest.approx(0.09)
    assert s["epochs_done"] == 2 and s["early_stopped"] is True
    off = UpdateLog(0.0)
    assert not off.add({"approx_kl": 5.0})
    assert UpdateLog().summary() == dict(epochs_done=0, early_stopped=False)
    with pytest.raises(ValueError, match="rl.target_kl"):
        UpdateLog(-1.0)


def test_rl_cosine_schedule_reaches_its_floor():
    from grow_jax.config_utils import base_config
    from grow_jax.train.trainer import rl_config_view

    c = base_config()
    c.rl.schedule, c.rl.lr, c.rl.final_lr_ratio, c.rl.warmup_steps = "cosine", 1e-3, 0.2, 0
    c.rl.iterations, c.rl.epochs, c.rl.groups_per_iter, c.rl.group_size = 3, 2, 2, 4
    c.env.max_steps, c.rl.minibatch_size = 8, 16  # 64 decisions -> 4 updates per epoch
    assert rl_total_updates(c) == 24
    sched = learning_rate_schedule(rl_config_view(c))
    assert float(sched(0)) == pytest.approx(1e-3)
    assert float(sched(24)) == pytest.approx(2e-4)
    assert float(sched(12)) == pytest.approx(6e-4)
    c.rl.schedule = "constant"
    assert float(learning_rate_schedule(rl_config_view(c))(24)) == pytest.approx(1e-3)


@pytest.mark.slow
def test_forced_large_update_stops_epochs_and_logs_diagnostics(tmp_path):
    """lr 0.5 makes the first epoch move the policy far: approx_kl exceeds target_kl and the
    other 3 epochs are skipped; without target_kl all 4 run; with rl.kl_backtracks the step
    is halved first (`kl_backtracks` in metrics.jsonl)."""
    from .test_trainer_e2e import MINI, _env

    def run(wd, *extra):
        cmd = [sys.executable, "-m", "grow_jax.main", f"--workdir={wd}", *MINI,
               "--config.rl.iterations=2", "--config.eval.every=0", "--config.eval.videos=0",
               "--config.rl.epochs=4", "--config.rl.lr=0.5", "--config.rl.minibatch_size=4",
               "--config.algo.drop_zero_advantage=False",
               # 16 episodes of up to 16 decisions over the 7 action words: some succeed
               "--config.env.max_steps=16", "--config.rl.groups_per_iter=4", *extra]
        out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        with open(os.path.join(wd, "metrics.jsonl")) as f:
            return [r for r in map(json.loads, f) if r["phase"] == "train"]

    # the plain KL checks (the shipped config's look-ahead guard would shrink the step)
    stopped = run(str(tmp_path / "kl"), "--config.rl.target_kl=0.001",
                  "--config.rl.kl_backtracks=0")
    for r in stopped:
        assert r["sample_tokens"] > r["samples"] > 0
        for k in ("action_entropy", "token_nll", "approx_kl", "approx_kl_max", "epochs_done",
                  "early_stopped", "frac_groups_uniform", "frac_groups_all_fail",
                  "frac_groups_all_success"):
            assert k in r, k
    assert any(r["approx_kl_max"] > 0 for r in stopped), "no learning signal in this rollout"
    assert any(r["early_stopped"] and r["epochs_done"] < 4 for r in stopped)
    assert all(r["approx_kl_max"] > 0.001 for r in stopped if r["early_stopped"])
    # one iteration is enough to show all 4 epochs run (and halves this test's slowest run)
    free = run(str(tmp_path / "free"), "--config.rl.target_kl=0", "--config.rl.kl_backtracks=0",
               "--config.rl.iterations=1")
    assert all(r["epochs_done"] == 4 and not r["early_stopped"] for r in free)
    # the look-ahead guard halves the same forced step before it is applied (and logs it)
    (guarded,) = run(str(tmp_path / "guard"), "--config.rl.target_kl=0.001",
                     "--config.rl.kl_backtracks=3", "--config.rl.iterations=1")
    assert guarded["kl_backtracks"] >= 1 and "kl_backtracks" not in stopped[0]
