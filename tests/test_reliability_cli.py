"""Bad input through the CLI: one line naming the key or file, and the workdir left as it was."""

import json

import pytest
from test_main_cli import _one_line_error, _run  # tests/ is on sys.path

from grow_jax import config_utils
from grow_jax import workdir as workdir_guard


@pytest.mark.parametrize(("flag", "words"), [
    ("--config.mesh.fsdp=3", ["mesh.fsdp=3", "does not divide the 8 devices"]),
    ("--config.rl.minibatch_size=12", ["rl.minibatch_size=12", "data x fsdp = 8"]),
    ("--config.sft.batch_size=4", ["sft.batch_size=4", "data x fsdp = 8"]),
])
def test_mesh_and_batch_errors_leave_no_workdir(tmp_path, flag, words):
    workdir = tmp_path / "w"
    line = _one_line_error(_run(f"--workdir={workdir}", flag))
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not workdir.exists()


def test_wrong_demo_file_is_named(tmp_path):
    bad = tmp_path / "demos.jsonl"
    bad.write_text('{"frame": 1}\n')
    workdir = tmp_path / "w"
    line = _one_line_error(_run(f"--workdir={workdir}", f"--config.sft.demo_path={bad}"))
    assert "sft.demo_path" in line and str(bad) in line and "not a grow_jax demonstration" in line
    assert not workdir.exists()


def _fake_rl_checkpoint(workdir, config):
    """What a train run leaves for the guard to read: checkpoints/STEP/extra/metadata."""
    extra = dict(phase="rl", iteration=3, config=json.loads(config_utils.config_to_json(config)))
    folder = workdir / "checkpoints" / "3" / "extra"
    folder.mkdir(parents=True)
    (folder / "metadata").write_text(json.dumps(extra))
    (workdir / "config.json").write_text("the old run's config\n")


def test_workdir_of_another_config_is_refused_and_left_as_it_was(tmp_path):
    workdir = tmp_path / "w"
    _fake_rl_checkpoint(workdir, config_utils.base_config())
    before = sorted(p.name for p in workdir.rglob("*"))
    line = _one_line_error(_run(f"--workdir={workdir}", "--config.rl.lr=0.5",
                                "--config.algo.gamma=0.9"))
    assert "holds a run of another config" in line and "--config.force=True" in line
    assert "algo.gamma (0.995 -> 0.9)" in line and "rl.lr (1e-06 -> 0.5)" in line
    assert (workdir / "config.json").read_text() == "the old run's config\n"
    assert sorted(p.name for p in workdir.rglob("*")) == before


def test_force_and_harmless_keys_pass_the_guard(tmp_path):
    workdir = tmp_path / "w"
    _fake_rl_checkpoint(workdir, config_utils.base_config())
    c = config_utils.base_config()
    c.rl.iterations, c.logging.progress = 999, False  # extending a run, quieter logs: fine
    workdir_guard.check_resume_config(c, str(workdir), "train")
    c.rl.lr = 0.5
    with pytest.raises(workdir_guard.WorkdirConfigMismatch, match="rl.lr"):
        workdir_guard.check_resume_config(c, str(workdir), "train")
    workdir_guard.check_resume_config(c, str(workdir), "eval")  # only train resumes
    c.force = True
    workdir_guard.check_resume_config(c, str(workdir), "train")
