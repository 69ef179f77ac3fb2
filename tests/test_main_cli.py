"""`python -m grow_jax.main` end to end (subprocess) and config checking."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from grow_jax import config_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=REPO):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    return subprocess.run(
        [sys.executable, "-m", "grow_jax.main", *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ------------------------------------------------------------------ import_hf -> export_hf
@pytest.mark.slow  # three subprocesses importing jax + transformers: ~20 s on 2 busy cores
@pytest.mark.needs_torch
def test_import_then_export_roundtrip_through_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    from test_hf_io import HF_TINY, _image_prompt, _torch_logits  # tests/ is on sys.path
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(3)
    original = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**HF_TINY)).eval()
    hf_dir = tmp_path / "hf"
    original.save_pretrained(hf_dir)
    _write_tokenizer(hf_dir)
    workdir, out = tmp_path / "run", tmp_path / "out"

    proc = _run(
        f"--workdir={workdir}",
        "--mode=import_hf",
        f"--hf_dir={hf_dir}",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
    )
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "checkpoints" / "0").is_dir()
    with open(workdir / "config.json") as f:
        assert json.load(f)["mesh"]["fsdp"] == 2

    proc = _run(f"--workdir={workdir}", "--mode=export_hf", f"--hf_out={out}")
    assert proc.returncode == 0, proc.stderr
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
        "generation_config.json",
    } <= set(os.listdir(out))
    exported = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    ids, pixels, grid = _image_prompt()
    np.testing.assert_array_equal(
        _torch_logits(exported, ids, pixels, grid), _torch_logits(original, ids, pixels, grid)
    )

    # A second export into the now non-empty folder is refused with one line.
    line = _one_line_error(_run(f"--workdir={workdir}", "--mode=export_hf", f"--hf_out={out}"))
    assert "not empty" in line and "overwrite" in line


def _write_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        ["pick up the key"] * 3,
        trainers.BpeTrainer(
            vocab_size=280,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)


def test_import_hf_errors_are_one_line(tmp_path):
    line = _one_line_error(_run(f"--workdir={tmp_path / 'w'}", "--mode=import_hf"))
    assert "--hf_dir" in line
    line = _one_line_error(
        _run(f"--workdir={tmp_path / 'w'}", "--mode=import_hf", f"--hf_dir={tmp_path}")
    )
    assert "config.json" in line and str(tmp_path) in line
    line = _one_line_error(
        _run(f"--workdir={tmp_path / 'w'}", "--mode=export_hf", f"--hf_out={tmp_path / 'o'}")
    )
    assert "no checkpoint" in line


# ------------------------------------------------------------------ config errors (CLI)
def test_unknown_override_key():
    proc = _run("--workdir=/tmp/unused", "--config.algo.gama=0.9")
    assert proc.returncode == 2
    assert _one_line_error(proc) == (
        "config error: unknown key 'algo.gama' (did you mean 'algo.gamma'?)"
    )


def test_wrong_override_type():
    line = _one_line_error(
        _run("--workdir=/tmp/unused", "--config=configs/base.py", "--config.rl.group_size=eight")
    )
    assert line == "config error: 'rl.group_size' must be int, got 'eight'"


def test_config_file_with_unknown_key_and_wrong_type(tmp_path):
    unknown = tmp_path / "unknown.py"
    unknown.write_text(
        "from grow_jax.config_utils import base_config\n"
        "def get_config():\n    c = base_config()\n    c.rl.gruop_size = 4\n"
        "    return c\n"
    )
    line = _one_line_error(_run("--workdir=/tmp/unused", f"--config={unknown}"))
    assert line == "config error: unknown key 'rl.gruop_size' (did you mean 'rl.group_size'?)"
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import ml_collections\ndef get_config():\n"
        "    return ml_collections.ConfigDict({'rl': {'group_size': '8'}})\n"
    )
    line = _one_line_error(_run("--workdir=/tmp/unused", f"--config={wrong}"))
    assert line == "config error: 'rl.group_size' must be int, got str"
    typed = tmp_path / "typed.py"
    typed.write_text(
        "from grow_jax.config_utils import base_config\n"
        "def get_config():\n    c = base_config()\n    c.rl.group_size = 'eight'\n"
        "    return c\n"
    )
    line = _one_line_error(_run("--workdir=/tmp/unused", f"--config={typed}"))
    assert f"{typed}:4" in line and "group_size" in line and "must be int" in line


def test_delegated_modes_fail_clearly_when_missing():
    from types import SimpleNamespace

    from grow_jax import main

    assert set(main.MODES) == {"train", "sft", "eval", "import_hf", "export_hf"}
    flag_values = SimpleNamespace(mode="eval")
    with pytest.raises(main.UsageError, match="needs grow_jax.no_such_module, which is not"):
        main._delegate("grow_jax.no_such_module", "run_eval")(None, "/tmp", flag_values)
    with pytest.raises(main.UsageError, match=r"needs grow_jax.config_utils.run_eval, which"):
        main._delegate("grow_jax.config_utils", "run_eval")(None, "/tmp", flag_values)


# ------------------------------------------------------------------ config_utils (in-process)
def test_base_config_validates_and_resolves():
    config = config_utils.base_config()
    config_utils.validate_config(config)
    minimal = ml_collections.ConfigDict(
        {"rl": {"lr": 3}, "model": {"hf_dir": "/x"}, "env": {"kwargs": {"anything": [1, 2]}}}
    )
    resolved = config_utils.resolve_config(minimal)
    assert resolved.rl.lr == 3 and resolved.rl.group_size == config.rl.group_size
    assert resolved.model.hf_dir == "/x" and resolved.env.kwargs.anything == [1, 2]
    json.loads(config_utils.config_to_json(resolved))


@pytest.mark.parametrize(
    "update, message",
    [
        ({"rl": {"epochs": True}}, "'rl.epochs' must be int, got bool"),
        ({"algo": {"gamma": "high"}}, "'algo.gamma' must be float, got str"),
        ({"env": {"tasks": ["a", 3]}}, "'env.tasks[1]' must be str, got int"),
        ({"env": {"tasks": 3}}, "'env.tasks' must be str or tuple of str, got int"),
        ({"env": {"tasks": None}}, "'env.tasks' must be str or tuple of str, got None"),
        ({"env": {"eval_tasks": [1]}}, "'env.eval_tasks[0]' must be str, got int"),
        ({"model": {"hf_dir": 7}}, "'model.hf_dir' must be str, got int"),
        ({"mesh": 4}, "'mesh' must be a section (dict), got int"),
        ({"evaluation": {}}, "unknown key 'evaluation'"),
    ],
)
def test_validate_config_messages(update, message):
    with pytest.raises(config_utils.ConfigError) as err:
        config_utils.validate_config(ml_collections.ConfigDict(update))
    assert str(err.value) == f"config error: {message}"


def test_check_overrides_free_form_section():
    with pytest.raises(config_utils.ConfigError, match="free-form section"):
        config_utils.check_overrides(["prog", "--config.env.kwargs.size=3"])
    config_utils.check_overrides(["prog", "--config.env.max_steps=3", "--workdir=x"])


@pytest.mark.parametrize(
    "name",
    sorted(
        f
        for f in os.listdir(os.path.join(REPO, "configs"))
        if f.endswith(".py") and not f.startswith("_")
    ),
)
def test_shipped_configs_validate(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"cfg_{name[:-3]}", os.path.join(REPO, "configs", name)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config_utils.validate_config(module.get_config())
