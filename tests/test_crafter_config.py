"""configs/crafter.py: its tasks are ones the scripted expert is tested on, and the CLI runs
SFT from the expert's demonstrations, GROW and the held-out evaluation on them."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from grow_jax.config_utils import validate_config
from grow_jax.data import demos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIG = _load(os.path.join(ROOT, "configs", "crafter.py"))


def test_crafter_config_is_valid_and_its_tasks_have_a_tested_expert():
    c = CONFIG.get_config()
    validate_config(c)
    expert_tests = _load(os.path.join(ROOT, "tests", "envs", "test_crafter_expert.py"))
    assert c.env.suite == "crafter" and set(c.env.tasks) <= set(expert_tests.CAPS)
    assert c.env.eval_tasks is None and c.sft.demo_path is None  # demos from the expert
    # the expert is tested to succeed within episodes no longer than the config's
    assert all(expert_tests.CAPS[t] <= c.env.max_steps for t in c.env.tasks)


@pytest.mark.slow
def test_crafter_config_runs_sft_grow_and_eval(tmp_path):
    wd = str(tmp_path / "run")
    args = [
        f"--workdir={wd}", "--config=configs/crafter.py", "--config.sft.demo_episodes=6",
        "--config.sft.steps=10", "--config.rl.iterations=1", "--config.rl.group_size=2",
        "--config.rl.seeds_per_group=2", "--config.rl.groups_per_iter=3",
        "--config.rl.minibatch_size=16",
        "--config.env.max_steps=4", "--config.eval.episodes=1", "--config.eval.num_envs=6",
        "--config.eval.videos=0", "--config.checkpoint.async_save=False",
        "--config.logging.tensorboard=False", "--config.logging.progress=False",
    ]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "grow_jax.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tasks = sorted(f"crafter:{t}" for t in CONFIG.TASKS)
    demo_file = os.path.join(wd, "demos", "bot_demos.array_record")
    assert sorted({r["task_id"] for r in demos.demo_dataset(demo_file)}) == tasks
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        phases = [json.loads(line)["phase"] for line in f]
    assert phases[0] == "sft" and "train" in phases and phases[-1] == "eval"
    with open(os.path.join(wd, "eval.json")) as f:
        assert sorted(json.load(f)["tasks"]) == tasks
