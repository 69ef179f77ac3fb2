"""Run observability: metrics.jsonl (one JSON object per row), TensorBoard, console lines,
and the learning-curve PNG drawn from metrics.jsonl at the end of a run."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np


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
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.primary = process_index == 0
        self.console = console and self.primary
        self._tb = None
        self._t0 = time.perf_counter()
        if self.primary:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, row: dict, console_keys=()) -> None:
        if not self.primary:
            return
        row = {k: _plain(v) for k, v in row.items()}
        row.setdefault("time_s", round(time.perf_counter() - self._t0, 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
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


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
    fig.savefig(out)
    plt.close(fig)
    return out
