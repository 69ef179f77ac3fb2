"""scripts/run_main_job.py: the multi-seed README block from finished runs (no training)."""

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    spec = importlib.util.spec_from_file_location(
        "run_main_job", os.path.join(ROOT, "scripts", "run_main_job.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_seed(wd, evals, wall_s=300.0, cpu_s=500.0, held_out=None):
    """A finished run: metrics rows, config, timing, and per-episode eval parts (10 episodes
    per eval on the config's task; `held_out` (step -> rate) adds a second task)."""
    from grow_jax.config_utils import base_config, config_to_json

    os.makedirs(os.path.join(wd, "eval_parts"))
    task = base_config().env.tasks[0]
    for it, p in evals:
        parts = [(task, p)] + ([("Held-Out-v0", held_out[it])] if held_out else [])
        with open(os.path.join(wd, "eval_parts", f"iter{it:06d}.jsonl"), "w") as f:
            for tid, rate in parts:
                eps = [dict(task_id=tid, success=i < round(10 * rate)) for i in range(10)]
                f.write(json.dumps(dict(task_id=tid, episodes=eps)) + "\n")
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        for i, (it, p) in enumerate(evals):
            if i:
                f.write(json.dumps(dict(phase="train", step=it, env_steps=100 * it,
                                        early_stopped=i == 1)) + "\n")
            f.write(json.dumps(dict(phase="eval", step=it, env_steps=100 * it,
                                    eval_success_rate=p, eval_episodes=500)) + "\n")
    with open(os.path.join(wd, "config.json"), "w") as f:
        f.write(config_to_json(base_config()))
    with open(os.path.join(wd, "timing.json"), "w") as f:
        json.dump(dict(wall_s=wall_s, cpu_s=cpu_s, command="python -m grow_jax.main --config=x",
                       cpus=2, cpu_model="cpu", load_avg_mean=3.0, load_avg_max=5.0,
                       parallel=2), f)


def test_report_table_and_bars(tmp_path, monkeypatch):
    mod = _script()
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "docs")
    _fake_seed(str(tmp_path / "seed0"), [(0, 0.2), (20, 0.7), (40, 0.8)])
    _fake_seed(str(tmp_path / "seed1"), [(0, 0.2), (20, 0.9), (40, 0.5)], cpu_s=1500.0)
    block = mod.report(str(tmp_path), [0, 1], "python scripts/run_main_job.py --seeds 0,1")
    assert "| 0 | 20.0% | 80.0% | 80.0% | **+60.0** | 1.00 | 1/2 |" in block
    assert "| 1 | 20.0% | 50.0% | 90.0% | **+30.0** | 0.56 |" in block
    assert "+45.0 ± 21.2 points" in block and "range +30.0 to +60.0" in block
    assert "lowest end/best 0.56 | no |" in block  # seed 1 fell from its best
    assert "CPU time 25.0 min" in block and "| no |" in block  # 1500 s of CPU
    assert os.path.exists(tmp_path / "docs" / "tiny_cpu_learning_curve.png")
    (tmp_path / "README.md").write_text(
        "a\n<!-- main-job:start -->\nold\n<!-- main-job:end -->\nb\n")
    mod.write_readme(block)
    text = (tmp_path / "README.md").read_text()
    assert "old" not in text and text.startswith("a\n") and text.endswith("b\n")


def test_timing_block_checks_the_table_reproduces(tmp_path, monkeypatch):
    """--timing: wall time of seeds run alone against the bar, each seed's figures against
    its table row, written into a second README block (added after the table)."""
    mod = _script()
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "docs")
    _fake_seed(str(tmp_path / "seed0"), [(0, 0.2), (20, 0.7), (40, 0.8)])
    _fake_seed(str(tmp_path / "seed1"), [(0, 0.2), (40, 0.5)], wall_s=660.0)
    (tmp_path / "README.md").write_text(
        "a\n<!-- main-job:start -->\n| seed | SFT start | end | best |\n|---|---|---|---|\n"
        "| 0 | 20.0% | 80.0% | 80.0% | **+60.0** |\n| 1 | 20.0% | 60.0% | 60.0% |\n"
        "<!-- main-job:end -->\nb\n")
    table = mod.table_rows((tmp_path / "README.md").read_text())
    assert table == {0: ("20.0%", "80.0%", "80.0%"), 1: ("20.0%", "60.0%", "60.0%")}
    block = mod.timing_report(str(tmp_path), [0, 1], "python x --timing", table)
    assert "| 0 | 5.0 | 8.3 | 3.0 / 5.0 | 20.0%, 80.0%, 80.0% | 20.0%, 80.0%, 80.0% | yes |" \
        in block
    assert "| 1 | 11.0 |" in block and block.count("| no |") == 1  # seed 1 ended at 50%
    assert "largest wall time 11.0 min: not met" in block
    mod.write_readme(block, mod.TIMING_START, mod.TIMING_END)
    mod.write_readme(block, mod.TIMING_START, mod.TIMING_END)  # replaced, not added twice
    text = (tmp_path / "README.md").read_text()
    assert text.count(mod.TIMING_START) == 1 and text.endswith("b\n")
    assert text.index("main-job:end") < text.index(mod.TIMING_START)
    monkeypatch.setattr(sys, "argv", ["run_main_job.py", "--timing", "--parallel", "2"])
    with pytest.raises(SystemExit, match="--timing runs seeds one at a time"):
        mod.main()


def test_out_writes_a_page_of_its_own(tmp_path, monkeypatch):
    """--out: the table and curves on their own page, each seed against the README row."""
    mod = _script()
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "docs")
    _fake_seed(str(tmp_path / "runs" / "seed0"), [(0, 0.2), (40, 0.8)])
    _fake_seed(str(tmp_path / "runs" / "seed1"), [(0, 0.2), (40, 0.5)])
    readme = ("a\n<!-- main-job:start -->\n| 0 | 20.0% | 80.0% | 80.0% |\n"
              "| 1 | 20.0% | 60.0% | 60.0% |\n<!-- main-job:end -->\n")
    (tmp_path / "README.md").write_text(readme)
    monkeypatch.setattr(sys, "argv", ["run_main_job.py", "--report-only", "--seeds", "0,1",
                                      "--workdir", str(tmp_path / "runs"),
                                      "--out", "docs/m2.md", "--title", "Rerun on host B"])
    mod.main()
    page = (tmp_path / "docs" / "m2.md").read_text()
    # The heading, and the command printed on the page regenerates it.
    assert page.startswith("# Rerun on host B\n") and "--title 'Rerun on host B'" in page
    assert "| 0 | 20.0%, 80.0%, 80.0% | 20.0%, 80.0%, 80.0% | yes |" in page
    assert "| 1 | 20.0%, 50.0%, 50.0% | 20.0%, 60.0%, 60.0% | no |" in page
    assert "1 of 2 seeds reproduce" in page and "![learning curves of every seed](m2_curves.png)" \
        in page and "--out docs/m2.md" in page
    assert os.path.exists(tmp_path / "docs" / "m2_curves.png")
    assert (tmp_path / "README.md").read_text() == readme  # untouched
    assert not os.path.exists(tmp_path / "docs" / "tiny_cpu_learning_curve.png")


def test_out_for_another_config_has_no_main_job_bars(tmp_path, monkeypatch):
    """--out with --config configs/crafter.py: the seeds' table and curves, but neither the
    main job's acceptance bars nor the comparison with README.md's (BabyAI) rows."""
    from grow_jax.config_utils import base_config, config_to_json

    mod = _script()
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "docs")
    for s in (0, 1):
        wd = tmp_path / "runs" / f"seed{s}"
        _fake_seed(str(wd), [(0, 0.5), (30, 0.7)])
        c = base_config()
        c.env.suite = "crafter"
        (wd / "config.json").write_text(config_to_json(c))
    monkeypatch.setattr(sys, "argv", ["run_main_job.py", "--report-only", "--seeds", "0,1",
                                      "--workdir", str(tmp_path / "runs"), "--config",
                                      "configs/crafter.py", "--out", "docs/crafter_job.md"])
    mod.main()
    page = (tmp_path / "docs" / "crafter_job.md").read_text()
    assert "for `configs/crafter.py`" in page and "--config configs/crafter.py" in page
    assert "| 0 | 50.0% | 70.0% | 70.0% | **+20.0** |" in page
    assert "scripted-expert episodes" in page and "bot episodes" not in page
    assert "acceptance bar" not in page and "README's table" not in page
    assert os.path.exists(tmp_path / "docs" / "crafter_job_curves.png")
    # per task (the fake runs hold one task at 50% then 70% on both seeds)
    task = base_config().env.tasks[0]
    assert f"| {task} | 50.0 ± 0.0 | 70.0 ± 0.0 | 20.0 ± 0.0 |" in page


def test_seed_parsing():
    mod = _script()
    assert mod.parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("0,x", "1,1", ""):
        with pytest.raises(SystemExit, match="--seeds"):
            mod.parse_seeds(bad)


def test_compare_report_from_finished_runs(tmp_path, monkeypatch):
    """scripts/compare.py's table: mean ± std over seeds, tokens trained per env step."""
    spec = importlib.util.spec_from_file_location(
        "compare", os.path.join(ROOT, "scripts", "compare.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", str(tmp_path))
    os.makedirs(tmp_path / "docs")
    for m, ends in (("grow_g0.995", (0.6, 0.8)), ("tgrpo", (0.3, 0.5))):
        for s, end in enumerate(ends):
            wd = str(tmp_path / m / f"seed{s}")
            _fake_seed(wd, [(0, 0.2), (2, end)], held_out={0: 0.1, 2: 0.3})
            with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
                f.write(json.dumps(dict(phase="train", step=2, env_steps=200, sample_tokens=50,
                                        epochs_done=4)) + "\n")
            t = json.load(open(os.path.join(wd, "timing.json")))
            t["peak_rss_mib"] = 100.0
            json.dump(t, open(os.path.join(wd, "timing.json"), "w"))
    text = mod.report(str(tmp_path), ["grow_g0.995", "tgrpo"], [0, 1], "python x")
    row = "| grow_g0.995 | 20.0 ± 0.0 | 70.0 ± 14.1 | 70.0 ± 14.1 | 50.0 ± 14.1 | 200 | 1.0 |"
    assert row in text
    assert "| tgrpo | 20.0 ± 0.0 | 40.0 ± 14.1 |" in text
    assert "Ranked by mean gain: grow_g0.995 (+50.0), tgrpo (+20.0)." in text
    assert "Lowest seed's gain: grow_g0.995 +40.0, tgrpo +10.0." in text
    assert "GROW is not the best" not in text
    # trained task 20 -> 70 (mean of 60 and 80), held-out task 10 -> 30 in every run
    assert ("| grow_g0.995 | 20.0 ± 0.0 | 70.0 ± 14.1 | 10.0 ± 0.0 | 30.0 ± 0.0 |" in text)
    assert "Held-out: Held-Out-v0." in text
    assert os.path.exists(tmp_path / "docs" / "results_curves.png")
    # --out: another study's report and plot, the same runs
    monkeypatch.setattr(sys, "argv", [
        "compare.py", "--methods", "grow_g0.995,tgrpo", "--seeds", "0,1", "--report-only",
        "--workdir", str(tmp_path), "--out", "docs/results_care.md", "--title", "Care study"])
    mod.main()
    care = (tmp_path / "docs" / "results_care.md").read_text()
    assert row in care and "![curves](results_care_curves.png)" in care
    assert care.startswith("# Care study\n")
    assert "--out docs/results_care.md --title 'Care study'" in care
    assert os.path.exists(tmp_path / "docs" / "results_care_curves.png")
    monkeypatch.setattr(sys, "argv", ["compare.py", "--report-only", "--out", "/tmp/x.md"])
    with pytest.raises(SystemExit, match="--out: expected a .md path"):
        mod.main()
