"""Documented paths through the CLI (subprocess, 2 iterations, tiny model): training from a
HF folder, a chosen Crafter / fake-Minecraft task list, export of a weights-only import,
and the 7B config's refusal to start from random weights."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "--config.rl.group_size=2", "--config.rl.seeds_per_group=1", "--config.rl.groups_per_iter=2",
    "--config.rl.iterations=2",
    "--config.rl.minibatch_size=16", "--config.rl.epochs=1", "--config.env.max_steps=3",
    "--config.eval.episodes=1", "--config.eval.num_envs=2", "--config.eval.every=0",
    "--config.eval.videos=0", "--config.checkpoint.async_save=False",
    "--config.logging.tensorboard=False", "--config.logging.progress=False",
]  # fmt: skip


def _main(*args):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "grow_jax.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def _ok(*args):
    proc = _main(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(workdir, phase):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["phase"] == phase]


def _eval_tasks(workdir):
    with open(os.path.join(workdir, "eval.json")) as f:
        return sorted(json.load(f)["tasks"])


def _tiny_cpu():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "tiny_cpu", os.path.join(ROOT, "configs", "tiny_cpu.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A HF Qwen2-VL folder (tiny_cpu's architecture, seed-7 random weights, the bundled
    tokenizer), written by grow_jax's own export."""
    from flax import nnx

    from grow_jax.config_utils import resolve_config
    from grow_jax.models import hf_io
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL
    from grow_jax.train import builders

    c = resolve_config(_tiny_cpu().get_config())
    mcfg = builders.model_config(c, builders.load_tokenizer(c))
    out = tmp_path_factory.mktemp("hf") / "tiny"
    hf_io.save_pretrained(Qwen2VL(mcfg, rngs=nnx.Rngs(7)), out, config=mcfg)
    return str(out)


def _key(path) -> str:
    """A leaf path as text, list indices and their string form (orbax) alike."""
    import jax

    return jax.tree_util.keystr(path).replace("'", "")


def _hf_params(folder):
    from flax import nnx

    import jax

    from grow_jax.models import hf_io

    model = hf_io.load_pretrained(folder)
    return {_key(p): np.asarray(x) for p, x in
            jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}


def _checkpoint_params(workdir, step):
    import jax
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ck:
        tree = ck.restore(os.path.join(workdir, "checkpoints", str(step), "params"))
    return {_key(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.slow
def test_train_from_hf_dir_starts_from_its_weights(tiny_hf, tmp_path):
    run, ev = str(tmp_path / "run"), str(tmp_path / "eval")
    args = ["--config=configs/tiny_cpu.py", f"--config.model.hf_dir={tiny_hf}", *SMALL]
    _ok(f"--workdir={run}", *args, "--config.checkpoint.every=1")
    assert not os.path.exists(os.path.join(run, "demos"))  # hf_dir weights: no SFT warm start
    # checkpoint 0 (before any update) holds exactly the folder's weights
    start, ref = _checkpoint_params(run, 0), _hf_params(tiny_hf)
    assert start.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(start[k], ref[k], err_msg=k)
    # --mode=eval of a workdir without checkpoints evaluates the hf_dir weights
    _ok(f"--workdir={ev}", "--mode=eval", *args)
    with open(os.path.join(ev, "eval.json")) as f:
        report = json.load(f)
    first = _rows(run, "eval")[0]
    assert first["step"] == 0
    assert (first["eval_success_rate"], first["eval_episodes"], first["eval_mean_steps"]) == (
        report["success_rate"], report["episodes"], report["mean_steps"])


@pytest.mark.slow
def test_rl_from_an_import_hf_workdir_takes_its_architecture(tiny_hf, tmp_path):
    """base.py's tiny preset differs from the imported folder's: the import's checkpoint
    metadata and tokenizer define the model (rl.init_checkpoint = that workdir)."""
    imp, run = str(tmp_path / "imp"), str(tmp_path / "run")
    _ok(f"--workdir={imp}", "--mode=import_hf", f"--hf_dir={tiny_hf}")
    _ok(f"--workdir={run}", f"--config.rl.init_checkpoint={imp}", *SMALL)
    assert not os.path.exists(os.path.join(run, "demos"))  # no SFT before an imported start
    start, ref = _checkpoint_params(run, 0), _hf_params(tiny_hf)
    for k in ref:
        np.testing.assert_array_equal(start[k], ref[k], err_msg=k)


@pytest.mark.slow
def test_grow_on_crafter_with_a_task_list(tmp_path):
    wd = str(tmp_path / "crafter")
    _ok(f"--workdir={wd}", "--config=configs/tiny_cpu.py", *SMALL, "--config.env.suite=crafter",
        '--config.env.tasks=("collect_wood","place_table")', "--config.env.image_size=32",
        "--config.sft.steps=0", "--config.logging.every=2")
    # eval_tasks None: evaluated on the training tasks, so exactly the two chosen
    assert _eval_tasks(wd) == ["crafter:collect_wood", "crafter:place_table"]
    assert [r["step"] for r in _rows(wd, "train")] == [2]  # logging.every=2
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["env"]["tasks"] == ["collect_wood", "place_table"]


def _fake_minecraft_config(tmp_path):
    """tiny_cpu on the fake Minecraft backend (a config file turns it on: env.kwargs is
    free-form), with frames and a token budget that fit the tiny model."""
    cfg = tmp_path / "mc_fake.py"
    tiny_cpu = os.path.join(ROOT, "configs", "tiny_cpu.py")
    cfg.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('t', {tiny_cpu!r})\n"
        "tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)\n"
        "def get_config():\n"
        "    c = tiny.get_config()\n"
        "    c.env.kwargs = dict(fake=True)\n"
        "    c.env.image_size = 32  # 640x360 frames -> 32x18 (padded to 32x32: 4 tokens)\n"
        "    c.agent.max_new_tokens = 13  # 1 action x 12 groups + <|im_end|>\n"
        "    c.sft.steps = 0\n"
        "    c.algo.action_tokens_only = False  # single-word masking: BabyAI/Crafter only\n"
        "    return c\n")
    return cfg


@pytest.mark.slow
def test_grow_on_fake_minecraft_with_builds_task_list(tmp_path):
    """BUILD.md's `--config.env.tasks='("mine_block:oak_log",)'`, on the fake backend."""
    wd = str(tmp_path / "mc")
    _ok(f"--workdir={wd}", f"--config={_fake_minecraft_config(tmp_path)}", *SMALL,
        "--config.env.suite=minecraft", '--config.env.tasks=("mine_block:oak_log",)')
    assert _eval_tasks(wd) == ["mine_block:oak_log"]
    assert [r["step"] for r in _rows(wd, "train")] == [1, 2]


@pytest.mark.slow
def test_eval_of_every_minecraft_task_on_the_fake_writes_the_family_table(tiny_hf, tmp_path):
    """`--mode=eval --config.env.eval_tasks=all`: all 823 OpenHA tasks (1 episode each, in
    shards of eval.num_envs games), the paper's per-family table in eval.md."""
    wd = str(tmp_path / "mc_all")
    _ok(f"--workdir={wd}", f"--config={_fake_minecraft_config(tmp_path)}", "--mode=eval",
        f"--config.model.hf_dir={tiny_hf}", "--config.env.suite=minecraft",
        "--config.env.eval_tasks=all", "--config.eval.episodes=1", "--config.env.max_steps=1",
        "--config.eval.num_envs=128", "--config.eval.videos=0",
        "--config.logging.tensorboard=False", "--config.logging.progress=False")
    with open(os.path.join(wd, "eval.json")) as f:
        report = json.load(f)
    assert len(report["tasks"]) == 823 and report["episodes"] == 823
    assert list(report["families"])[:3] == ["embodied", "gui", "combat"]
    assert sum(f["tasks"] for f in report["families"].values()) == 823
    with open(os.path.join(wd, "eval.md")) as f:
        md = f.read()
    assert "| embodied | 153 |" in md and "| gui | 596 |" in md and "| combat | 61 |" in md


def test_7b_config_refuses_to_start_without_weights(tmp_path):
    proc = _main(f"--workdir={tmp_path / 'w'}", "--config=configs/qwen2_vl_7b_tpu.py")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "needs starting weights" in line and "model.hf_dir" in line


@pytest.mark.slow
def test_export_hf_of_a_weights_only_import(tiny_hf, tmp_path):
    src = tmp_path / "weights_only"
    src.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(os.path.join(tiny_hf, name), src / name)
    wd, out = str(tmp_path / "w"), str(tmp_path / "out")
    _ok(f"--workdir={wd}", "--mode=import_hf", f"--hf_dir={src}")
    proc = _ok(f"--workdir={wd}", "--mode=export_hf", f"--hf_out={out}")
    warnings = [ln for ln in proc.stderr.splitlines() if "tokenizer" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning:"), proc.stderr
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors"} <= files and "tokenizer.json" not in files
    ref, got = _hf_params(tiny_hf), _hf_params(out)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
