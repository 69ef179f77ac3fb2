"""End-to-end: the CLI's train mode on a miniature BabyAI config; exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MINI = [
    "--config=configs/tiny_cpu.py",
    "--config.rl.group_size=4", "--config.rl.groups_per_iter=2", "--config.rl.iterations=3",
    "--config.rl.minibatch_size=32", "--config.rl.epochs=1", "--config.env.max_steps=6",
    "--config.sft.demo_episodes=2", "--config.sft.steps=4", "--config.sft.steps_per_call=2",
    "--config.eval.episodes=4", "--config.eval.num_envs=4", "--config.eval.every=2",
    "--config.eval.videos=1", "--config.checkpoint.every=1", "--config.checkpoint.async_save=False",
    "--config.logging.tensorboard=False",
]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "grow_jax.main", f"--workdir={workdir}", *MINI, *extra]


def _final_params(workdir):
    import orbax.checkpoint as ocp

    ckdir = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
    with ocp.StandardCheckpointer() as ck:
        tree = ck.restore(os.path.join(ckdir, str(step), "params"))
    import jax

    return step, {jax.tree_util.keystr(p): np.asarray(x)
                  for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def _check_outputs(wd):
    rows = _rows(wd)
    train = [r for r in rows if r["phase"] == "train"]
    evals = [r for r in rows if r["phase"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3]
    assert [r["step"] for r in evals] == [0, 2, 3]  # start, every 2, final
    for key in ("success_rate", "mean_return", "loss", "kl", "clip_frac", "grad_norm",
                "samples_per_s", "env_steps"):
        assert key in train[-1], key
    assert evals[0]["eval_episodes"] == 4
    for name in ("eval.json", "eval.md", "learning_curve.png", "config.json"):
        assert os.path.exists(os.path.join(wd, name)), name
    assert os.listdir(os.path.join(wd, "videos"))
    report = json.load(open(os.path.join(wd, "eval.json")))
    assert report["episodes"] == 4 and "GoTo" in report["families"]


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]


@pytest.mark.slow
def test_train_outputs_and_exact_resume_after_sigkill(tmp_path):
    """The train mode writes every promised output; a run killed after its iteration-1
    checkpoint and restarted ends bit-identical to the uninterrupted run."""
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    out = subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_outputs(ref)

    proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ck1 = os.path.join(killed, "checkpoints", "1")
    deadline = time.time() + 600
    while not os.path.isdir(ck1) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(ck1), "the run never wrote its iteration-1 checkpoint"

    out = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stderr + out.stdout
    step_a, a = _final_params(ref)
    step_b, b = _final_params(killed)
    assert step_a == step_b == 3
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # metrics: one row per iteration, as in the uninterrupted run
    steps = lambda wd: [(r["phase"], r["step"]) for r in _rows(wd)]  # noqa: E731
    assert steps(killed) == steps(ref)
