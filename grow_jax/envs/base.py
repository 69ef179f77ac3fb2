"""Task records and the environment contract shared by every suite.

Every env returns observations as ``{"image": HxWx3 uint8 (a fresh copy), "instruction": str}``
and an ``info`` dict that always has ``success: bool``. Actions are ints (BabyAI, Crafter)
or int arrays (Minecraft: JARVIS-VLA group values, one row per low-level action).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

Obs = dict  # {"image": np.ndarray[H, W, 3] uint8, "instruction": str}


@dataclasses.dataclass(frozen=True)
class Task:
    """One language-instructed task.

    Attributes:
        task_id: stable id used to group rollouts and report success (unique within a suite).
        suite: "babyai", "crafter" or "minecraft".
        family: category for reports (BabyAI level group, Crafter category, Minecraft family).
        instruction: the text given to the agent (for BabyAI: the mission of `seed`).
        seed: world seed used by `Env.reset(None)`; None means a fresh random world each reset.
        max_steps: episode horizon in `Env.step` calls (None: the suite's default).
        spawn: suite-specific set-up (Minecraft spawn file, tools, inventory, position, ...).
    """

    task_id: str
    suite: str
    family: str
    instruction: str
    seed: int | None = None
    max_steps: int | None = None
    spawn: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@runtime_checkable
class Env(Protocol):
    """Single environment, gymnasium-style step results."""

    task: Task

    def reset(self, seed: int | None = None) -> Obs:
        """Starts an episode (seed None: the task's seed) and returns the first observation."""

    def step(self, action: int | np.ndarray) -> tuple[Obs, float, bool, bool, dict]:
        """Returns (obs, reward, terminated, truncated, info); info["success"] is a bool."""

    def close(self) -> None:
        """Releases resources."""


def make_obs(image: np.ndarray, instruction: str) -> Obs:
    """Builds an observation holding a private uint8 HWC copy of `image`."""
    image = np.array(image, dtype=np.uint8, copy=True)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"observation image must be HxWx3, got shape {image.shape}")
    return {"image": image, "instruction": instruction}


def selection_names(ids: str | Sequence[str] | None) -> tuple[str, ...]:
    """A task selection as a tuple of names: None -> ("all",), "x" -> ("x",).

    Raises a one-line ValueError for anything but a string or a non-empty run of strings."""
    if ids is None:
        return ("all",)
    if isinstance(ids, str):
        return (ids,)
    if isinstance(ids, Sequence) and ids and all(isinstance(i, str) for i in ids):
        return tuple(ids)
    raise ValueError(f"a task selection must be a task id, a family name, 'all' or a "
                     f"non-empty tuple of them, got {ids!r}")


def select_tasks(tasks: Sequence[Task], ids: str | Sequence[str] | None,
                 suite: str) -> list[Task]:
    """The tasks named by `ids`, in the order named (no duplicates).

    Each name is a task_id (every seed of it), a family (`Task.family`: a BabyAI level
    group, a Crafter category, a Minecraft family) or "all"; None means "all". An unknown
    name is a one-line ValueError listing the closest ids and families.
    """
    names = selection_names(ids)
    by_id: dict[str, list[Task]] = {}
    by_family: dict[str, list[Task]] = {}
    for t in tasks:
        by_id.setdefault(t.task_id, []).append(t)
        by_family.setdefault(t.family, []).append(t)
    out, seen = [], set()
    for name in names:
        if name == "all":
            chosen = list(tasks)
        elif name in by_id:
            chosen = by_id[name]
        elif name in by_family:
            chosen = by_family[name]
        else:
            known = list(by_id) + list(by_family)
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown {suite} task or family {name!r}{hint} "
                f"(families: {', '.join(sorted(by_family))}; or 'all')")
        for t in chosen:
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out


def resize_frame(image: np.ndarray, size: int) -> np.ndarray:
    """`image` (HWC uint8) with its longer side resized to `size` pixels (PIL bicubic, aspect
    kept, shorter side rounded, at least 1); an image whose longer side is already `size`
    is returned unchanged (pixel-identical)."""
    h, w = image.shape[:2]
    if max(h, w) == size:
        return image
    from PIL import Image

    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    return np.asarray(Image.fromarray(image).resize((tw, th), Image.BICUBIC))


class ResizedFrames:
    """An env whose observation frames are resized by `resize_frame` (config env.image_size);
    every other attribute (task, expert_action, ...) is the wrapped env's."""

    def __init__(self, env: Env, size: int):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"env.image_size must be None or a positive int, got {size!r}")
        self.env, self.size = env, size

    def __getattr__(self, name):
        return getattr(self.env, name)

    def _obs(self, obs: Obs) -> Obs:
        return {**obs, "image": resize_frame(obs["image"], self.size)}

    def reset(self, seed: int | None = None) -> Obs:
        return self._obs(self.env.reset(seed))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(obs), reward, terminated, truncated, info

    def close(self) -> None:
        self.env.close()
