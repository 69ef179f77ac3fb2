"""Crash-safe outputs: atomic writes, fsynced metrics rows, torn metrics lines, preemption."""

import json
import os
import signal

import numpy as np
import pytest

from grow_jax.io_utils import atomic_path, atomic_write
from grow_jax.train import metrics as metrics_mod
from grow_jax.train.metrics import MetricsWriter, read_metrics, set_aside_metrics
from grow_jax.train.preemption import GracefulStop


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    path = str(tmp_path / "eval.json")
    atomic_write(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("half of the ne")
        raise RuntimeError("killed mid-write")
    assert open(path).read() == "old"  # the old file, untouched
    assert os.listdir(tmp_path) == ["eval.json"]  # no temp file left behind
    atomic_write(path, b"new")
    assert open(path).read() == "new"


def test_metrics_rows_are_fsynced(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(metrics_mod.os, "fsync", lambda fd: synced.append(fd))
    w = MetricsWriter(str(tmp_path), tensorboard=False, console=False)
    w.write({"phase": "train", "step": 1})
    w.write({"phase": "train", "step": 2})
    assert len(synced) == 2


def test_torn_last_line_is_set_aside_and_resumed_rows_are_clean(tmp_path, capfd):
    wd = str(tmp_path)
    good = [{"phase": "train", "step": 1, "loss": 0.5}, {"phase": "train", "step": 2}]
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in good) + '{"phase": "train", "st')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:3: skipped"):
        assert read_metrics(wd) == good  # read_metrics alone tolerates the torn line
    w = MetricsWriter(wd, tensorboard=False, console=False)  # a resumed run opens the file
    assert "torn line" in capfd.readouterr().err
    w.write({"phase": "train", "step": 3, "time_s": 0.0})
    lines = open(os.path.join(wd, "metrics.jsonl")).read().splitlines()
    assert [json.loads(x) for x in lines] == [*good, {"phase": "train", "step": 3, "time_s": 0.0}]
    assert open(os.path.join(wd, "metrics.torn.txt")).read() == '{"phase": "train", "st\n'


def test_set_aside_metrics_moves_rerun_rows(tmp_path):
    wd = str(tmp_path)
    w = MetricsWriter(wd, tensorboard=False, console=False)
    for s in (1, 2, 3):
        w.write({"phase": "train", "step": s, "time_s": 0.0})
    set_aside_metrics(wd, lambda r: r["step"] <= 1)
    assert [r["step"] for r in read_metrics(wd)] == [1]
    assert [r["step"] for r in read_metrics(wd, "metrics.discarded.jsonl")] == [2, 3]


def test_episode_gif_is_written_atomically(tmp_path, monkeypatch):
    from grow_jax.agent import videos

    frames = [np.zeros((8, 8, 3), np.uint8)] * 2

    def die(path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"GIF89a")  # a partial file, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(videos.imageio, "mimsave", die)
    with pytest.raises(KeyboardInterrupt):
        videos.write_episode_gif(str(tmp_path / "ep.gif"), frames, "go", ["left"], False)
    assert os.listdir(tmp_path) == []  # no half-written GIF under the final name
    monkeypatch.undo()
    out = videos.write_episode_gif(str(tmp_path / "ep.gif"), frames, "go", ["left"], False)
    assert os.path.getsize(out) > 100 and os.listdir(tmp_path) == ["ep.gif"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_turns_the_signal_into_a_flag(sig):
    before = signal.getsignal(sig)
    with GracefulStop() as stop:
        os.kill(os.getpid(), sig)
        assert stop.requested == signal.Signals(sig).name  # the process is still alive
    assert signal.getsignal(sig) == before
