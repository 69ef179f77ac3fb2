"""Expert demonstrations as state-action records in ArrayRecord files, read through grain.

One record = one decision: the frame (uint8 HWC), the instruction and the expert's env
action. An env with an `expert_action()` provides the expert (BabyAI's `BabyAIBot`, the
scripted Crafter expert); other suites pass recorded files.
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterator

import numpy as np


def encode_record(frame: np.ndarray, instruction: str, action, task_id: str, episode: int,
                  t: int) -> bytes:
    buf = io.BytesIO()
    meta = json.dumps(dict(instruction=instruction, action=np.asarray(action).tolist(),
                           task_id=task_id, episode=episode, t=t))
    np.savez(buf, frame=np.asarray(frame, np.uint8), meta=np.frombuffer(meta.encode(), np.uint8))
    return buf.getvalue()


def decode_record(record: bytes) -> dict:
    with np.load(io.BytesIO(record)) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        meta["frame"] = z["frame"]
    return meta


def bot_episodes(tasks, episodes: int, seed: int, env_kwargs: dict,
                 max_steps: int | None = None) -> Iterator[dict]:
    """Plays the env's expert (`env.expert_action()`) on `episodes` episodes (tasks
    round-robin, seeds seed, seed+1..), yielding one dict per decision."""
    from grow_jax.envs import make_env

    for ep in range(episodes):
        task = tasks[ep % len(tasks)]
        env = make_env(task, **env_kwargs)
        if not hasattr(env, "expert_action"):
            env.close()
            raise ValueError(f"no expert for suite {task.suite!r} (task {task.task_id!r}): "
                             "pass sft.demo_path with recorded demonstrations")
        obs = env.reset(seed + ep)
        for t in range(max_steps or 10_000):
            a = env.expert_action()
            yield dict(frame=obs["image"], instruction=obs["instruction"], action=a,
                       task_id=task.task_id, episode=ep, t=t)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        env.close()


def write_demos(path: str, records: Iterator[dict]) -> int:
    """Writes decision records to an ArrayRecord file atomically; returns the count."""
    from array_record.python.array_record_module import ArrayRecordWriter

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    n = 0
    for r in records:
        writer.write(encode_record(r["frame"], r["instruction"], r["action"], r["task_id"],
                                   r["episode"], r["t"]))
        n += 1
    writer.close()
    os.replace(tmp, path)
    return n


def demo_dataset(paths):
    """A grain MapDataset of decoded decision records from ArrayRecord files."""
    import grain

    paths = [paths] if isinstance(paths, str) else list(paths)
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"demonstration file not found: {p}")
    return grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths)).map(decode_record)
