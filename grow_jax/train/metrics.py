"""Run observability: metrics.jsonl (one JSON object per row), TensorBoard, console lines,
and the learning-curve PNG drawn from metrics.jsonl at the end of a run.

Crash safety: each row is appended with flush + fsync, so a kill loses at most the row being
written. A torn last line (a kill mid-write) is moved to metrics.torn.txt with a one-line
warning when the writer opens the file, so the resumed run appends clean rows after it;
`read_metrics` skips any line that is not JSON, with a warning.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings

import numpy as np

from grow_jax.io_utils import atomic_write
from grow_jax.train import preemption

METRICS_FILE = "metrics.jsonl"
DISCARDED_FILE = "metrics.discarded.jsonl"  # rows of iterations a resumed run re-runs
TORN_FILE = "metrics.torn.txt"  # a partial last line left by a kill mid-write


def _plain(v):
    if isinstance(v, (np.generic, np.ndarray)):
        v = v.item() if np.ndim(v) == 0 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsWriter:
    """Appends rows to WORKDIR/metrics.jsonl (flushed per row, so a crash loses nothing),
    mirrors scalars to TensorBoard and prints a compact progress line."""

    def __init__(self, workdir: str, tensorboard: bool = True, console: bool = True,
                 process_index: int = 0):
        self.path = os.path.join(workdir, METRICS_FILE)
        self.primary = process_index == 0
        self.console = console and self.primary
        self._tb = None
        self._t0 = time.perf_counter()
        if self.primary:
            os.makedirs(workdir, exist_ok=True)
            repair_torn_tail(workdir)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, row: dict, console_keys=()) -> None:
        if not self.primary:
            return
        row = {k: _plain(v) for k, v in row.items()}
        row.setdefault("time_s", round(time.perf_counter() - self._t0, 3))
        line = json.dumps(row) + "\n"
        # test hook (GROW_JAX_TEST_KILL_AT=metrics:STEP): a kill in the middle of this write
        if preemption.kill_requested("metrics", row.get("step")):
            with open(self.path, "a") as f:
                f.write(line[: len(line) // 2])
            preemption.kill_now()
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            step = int(row.get("step", 0))
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self.console:
            parts = [f"{k}={_fmt(row[k])}" for k in console_keys if k in row]
            print(f"[{row.get('phase', 'train')} {row.get('step', '')}] " + " ".join(parts),
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_metrics(workdir: str, name: str = METRICS_FILE) -> list[dict]:
    """The rows of WORKDIR/metrics.jsonl; a line that is not a JSON object (a torn write) is
    skipped with a warning naming the file and line."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                warnings.warn(f"{path}:{k}: skipped a line that is not a JSON row "
                              f"({line.strip()[:40]!r}...)", stacklevel=2)
                continue
            rows.append(row)
    return rows


def repair_torn_tail(workdir: str) -> str | None:
    """Moves a torn last line of WORKDIR/metrics.jsonl (no newline, or not JSON) to
    metrics.torn.txt so that appended rows start on a clean line. Returns the fragment."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return None
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    try:
        torn = not data.endswith(b"\n") or not isinstance(json.loads(last), dict)
    except ValueError:
        torn = True
    if not torn:
        return None
    with open(os.path.join(workdir, TORN_FILE), "ab") as f:
        f.write(last + b"\n")
        f.flush()
        os.fsync(f.fileno())
    atomic_write(path, body + b"\n" if body else b"")
    fragment = last.decode(errors="replace")
    print(f"[metrics] warning: {path} ended with a torn line ({len(last)} bytes, a kill during "
          f"a write); moved it to {TORN_FILE}", file=sys.stderr, flush=True)
    return fragment


def set_aside_metrics(workdir: str, keep) -> None:
    """Rows that a resumed run will write again move to metrics.discarded.jsonl; nothing
    a run wrote is deleted. Both files are rewritten durably (fsync / atomic rename).
    Multi-process: process 0 only (the metrics writer)."""
    from grow_jax import distributed

    if not distributed.is_primary():
        return
    rows = read_metrics(workdir)
    kept = [r for r in rows if keep(r)]
    if len(kept) == len(rows):
        return
    with open(os.path.join(workdir, DISCARDED_FILE), "a") as f:
        for r in rows:
            if not keep(r):
                f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    atomic_write(os.path.join(workdir, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in kept))


def plot_learning_curve(workdir: str, out_name: str = "learning_curve.png") -> str | None:
    """Evaluation success (held-out) and training-rollout success against env steps."""
    rows = read_metrics(workdir)
    ev = [r for r in rows if "eval_success_rate" in r]
    tr = [r for r in rows if r.get("phase") == "train" and "success_rate" in r]
    if not ev and not tr:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if tr:
        ax.plot([r["env_steps"] for r in tr], [r["success_rate"] for r in tr], alpha=0.5,
                label="training rollouts (sampled)")
    if ev:
        x = [r.get("env_steps", 0) for r in ev]
        y = [r["eval_success_rate"] for r in ev]
        ax.plot(x, y, "o-", label="evaluation (held-out seeds)")
        n = ev[-1].get("eval_episodes", 0)
        if n:
            se = [math.sqrt(max(p * (1 - p), 1e-9) / n) for p in y]
            ax.fill_between(x, [a - 2 * s for a, s in zip(y, se)],
                            [a + 2 * s for a, s in zip(y, se)], alpha=0.2)
    ax.set_xlabel("environment steps (RL)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    out = os.path.join(workdir, out_name)
    from grow_jax.io_utils import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
    return out
