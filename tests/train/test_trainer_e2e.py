"""End-to-end: the CLI's train mode on a miniature BabyAI config; exact resume after SIGTERM and
SIGKILLs at every kind of point, with the default asynchronous checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from grow_jax.train.preemption import KILL_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MINI = [
    "--config=configs/tiny_cpu.py",
    "--config.rl.group_size=4", "--config.rl.groups_per_iter=2", "--config.rl.iterations=3",
    "--config.rl.minibatch_size=32", "--config.rl.epochs=1", "--config.env.max_steps=6",
    "--config.sft.demo_episodes=2", "--config.sft.steps=4", "--config.sft.steps_per_call=2",
    "--config.eval.episodes=4", "--config.eval.num_envs=4", "--config.eval.every=2",
    "--config.eval.videos=1", "--config.checkpoint.every=2", "--config.logging.tensorboard=False",
    # the random-init policy's episodes all fail alike under the action grammar: train on
    # zero-advantage samples too, so every iteration updates (and logs its loss)
    "--config.algo.drop_zero_advantage=False",
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


TIMING = ("time_s", "rollout_s", "train_s", "iter_s", "samples_per_s", "env_steps_per_s")

# One run, interrupted again and again (GROW_JAX_TEST_KILL_AT, see grow_jax.train.preemption):
# (hook, expected exit). Checkpoints every 2 iterations, asynchronous (the defaults' mode).
INTERRUPTIONS = [
    ("rollout:1:SIGTERM", 0),  # graceful: finish iteration 1, checkpoint it, exit 0
    ("rollout:2", -9),  # SIGKILL after the episodes, before the update
    ("update:2", -9),  # after the update, before its metrics row
    ("eval:2", -9),  # during the periodic evaluation (train row 2 already written)
    ("checkpoint:2", -9),  # right after the asynchronous save of iteration 2 started
    ("metrics:3", -9),  # half of train row 3 written: a torn last line
]


def _clean(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_train_outputs_and_exact_resume_after_kills_anywhere(tmp_path):
    """The train mode writes every promised output; a run stopped by SIGTERM and then
    SIGKILLed at every kind of point (rollout, update, evaluation, asynchronous checkpoint
    write, metrics write), restarted each time, ends bit-identical to the uninterrupted run,
    with the same metrics rows (timings aside)."""
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    out = subprocess.run(_cmd(ref), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_outputs(ref)

    for hook, code in INTERRUPTIONS:
        out = subprocess.run(_cmd(killed), cwd=ROOT, env={**_env(), KILL_ENV: hook},
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == code, (hook, out.stderr[-3000:])
        if code == 0:
            assert "stopped by SIGTERM after iteration 1" in out.stdout, out.stdout[-2000:]
            assert os.path.isdir(os.path.join(killed, "checkpoints", "1"))
    ckdir = os.path.join(killed, "checkpoints")
    newest = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
    _damage(os.path.join(ckdir, str(newest)))  # and the newest checkpoint is damaged too
    out = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    assert "torn line" in out.stderr
    assert f"checkpoints/{newest} is damaged" in out.stderr
    assert os.path.isdir(os.path.join(killed, "checkpoints.damaged", str(newest)))
    step_a, a = _final_params(ref)
    step_b, b = _final_params(killed)
    assert step_a == step_b == 3
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _clean(_rows(killed)) == _clean(_rows(ref))
    assert os.path.exists(os.path.join(killed, "metrics.discarded.jsonl"))
    assert os.path.exists(os.path.join(killed, "metrics.torn.txt"))


def _damage(step_dir):
    """Truncates the array data files of one checkpoint step (a torn copy, a bad disk)."""
    for root, _, files in os.walk(step_dir):
        if os.path.basename(root) == "d":
            for f in files:
                with open(os.path.join(root, f), "r+b") as fh:
                    fh.truncate(7)


@pytest.mark.slow
def test_non_finite_updates_are_skipped_then_stop_the_run(tmp_path):
    """A learning rate of 1e30 blows the params up after one update; every later loss is
    non-finite, so those updates are skipped and counted, and after rl.max_skipped_updates
    in a row the run stops with one line naming the last good checkpoint (exit status 1)."""
    wd = str(tmp_path / "nan")
    out = subprocess.run(_cmd(wd, "--config.rl.lr=1e30", "--config.rl.warmup_steps=0",
                              "--config.rl.max_skipped_updates=2", "--config.eval.every=0"),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    errors = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-3000:]
    assert "updates in a row had a non-finite loss or gradient" in errors[0]
    assert "rl.max_skipped_updates=2" in errors[0] and "checkpoints/" in errors[0]
    train = [r for r in _rows(wd) if r["phase"] == "train"]
    assert sum(r["skipped_updates"] for r in train) >= 2


@pytest.mark.slow
def test_other_model_size_is_one_line_error_and_changes_nothing(tmp_path):
    """A workdir trained with hidden_size 64, restarted with hidden_size 32: one line naming
    the first tensor whose shape differs (not orbax's "tree structures do not match")."""
    wd = str(tmp_path / "sft")
    out = subprocess.run(_cmd(wd, "--mode=sft", "--config.sft.steps=2"), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    smaller = tmp_path / "smaller.py"
    smaller.write_text(
        "import runpy\n\n\ndef get_config():\n"
        f"    c = runpy.run_path({os.path.join(ROOT, 'configs', 'tiny_cpu.py')!r})['get_config']()\n"
        "    c.model.preset_overrides.hidden_size = 32\n    return c\n")
    before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
    cmd = [a if not a.startswith("--config=") else f"--config={smaller}" for a in _cmd(wd)]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    errors = [x for x in out.stderr.splitlines() if x.startswith("error: ")]
    assert out.returncode == 1 and len(errors) == 1, out.stderr[-3000:]
    assert "does not fit this model" in errors[0] and "in the checkpoint" in errors[0]
    assert "Traceback" not in out.stderr
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before


@pytest.mark.slow
def test_rl_pack_trains_like_padding_through_the_cli(tmp_path):
    """--config.rl.pack=True: the same iteration (same rollouts) gives the padded run's loss
    and update metrics (packing changes the layout, not the estimator); PPO, so that the
    value head's read and loss ride along and advantages are non-zero without rewards."""
    rows = {}
    for pack in (False, True):
        wd = str(tmp_path / f"pack{pack}")
        out = subprocess.run(_cmd(wd, f"--config.rl.pack={pack}", "--config.rl.iterations=1",
                                  "--config.algo.name=ppo", "--config.eval.every=0",
                                  "--config.eval.episodes=1",
                                  "--config.eval.num_envs=1", "--config.eval.videos=0"),
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        rows[pack] = [r for r in _rows(wd) if r["phase"] == "train"][0]
    assert rows[False]["samples"] == rows[True]["samples"] > 0
    for key in ("loss", "grad_norm", "vf_loss", "approx_kl"):
        assert abs(rows[False][key] - rows[True][key]) < 1e-5, key
