"""Minecraft (OpenHA task suite) over MineRL 0.4-style envs, with a fake for tests.

Env actions are JARVIS-VLA group values: an int array [chunk, 12] (or [12]), one row per
low-level (50 ms) action; `MineRLEnv.step` runs every row, so one decision = `chunk` ticks.
Groups, in order, with their number of values (`BASES`):
  hotbar (0 = none, k = hotbar.k), forward/back (0, forward, back), left/right (0, left, right),
  sprint/sneak (0, sprint, sneak), use, drop, attack, jump, camera flag, inventory (0/1),
  camera pitch and yaw (21 mu-law bins, mu=20, +-10 degrees; bin 10 = no motion).
Opposite keys pressed together (forward+back, left+right, sprint+sneak) encode as 0.
"""

from __future__ import annotations

import collections
import csv
import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from grow_jax.envs.base import Task, make_obs, select_tasks

SUITE = "minecraft"
DEFAULT_MAX_STEPS = 300  # decisions (= 1200 ticks = 60 s with chunk 4)
ACTIONS_PER_DECISION = 4
FRAME_HW = (360, 640)
GROUPS = (
    "hotbar", "forward_back", "left_right", "sprint_sneak", "use", "drop", "attack", "jump",
    "camera_flag", "inventory", "pitch", "yaw",
)  # fmt: skip
BASES = (10, 3, 3, 3, 2, 2, 2, 2, 2, 2, 21, 21)
CAMERA_MU = 20.0
CAMERA_MAX = 10.0
CAMERA_BINS = 21
CAMERA_CENTER_BIN = CAMERA_BINS // 2
BUTTONS = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack", "use", "drop",
           "inventory") + tuple(f"hotbar.{k}" for k in range(1, 10))  # fmt: skip
_PAIRS = (("forward", "back"), ("left", "right"), ("sprint", "sneak"))
_BINARY = ("use", "drop", "attack", "jump", None, "inventory")  # groups 4..9 (8: camera flag)
_VERBS = {
    "mine_block": "mine",
    "craft_item": "craft",
    "smelt_item": "smelt",
    "kill_entity": "kill",
}
TSV_FIELDS = ("task", "spawn_file", "family", "goal", "tools", "needs", "init_inventory", "seed",
              "position", "label")  # fmt: skip


# ---------------------------------------------------------------- tasks


def instruction_for(spawn_file: str, goal: str) -> str:
    """'mine oak log', 'craft crafting table', 'smelt iron ingot', 'kill zombie', 'interact with anvil'."""
    words = goal.replace("_", " ")
    verb = _VERBS.get(spawn_file)
    return words if verb is None else f"{verb} {words}"


def read_task_table(path: str | None = None) -> list[dict[str, str]]:
    """Rows of the OpenHA task TSV (default: the shipped grow_jax/assets/minecraft_tasks.tsv)."""
    if path is None:
        text = (
            importlib.resources.files("grow_jax")
            .joinpath("assets/minecraft_tasks.tsv")
            .read_text(encoding="utf-8")
        )
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    rows = list(csv.reader(lines, delimiter="\t"))
    header, body = rows[0], rows[1:]
    if tuple(header) != TSV_FIELDS:
        raise ValueError(
            f"{path or 'minecraft_tasks.tsv'}: header {header} != expected {TSV_FIELDS}"
        )
    out = []
    for lineno, row in enumerate(body, start=2):
        if len(row) != len(TSV_FIELDS):
            raise ValueError(f"{path or 'minecraft_tasks.tsv'}: data row {lineno} has {len(row)} "
                             f"fields, expected {len(TSV_FIELDS)}: {row}")  # fmt: skip
        out.append(dict(zip(TSV_FIELDS, row)))
    return out


def make_tasks(
    ids: str | Sequence[str] | None = None,
    path: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[Task]:
    """Tasks from the TSV. task_id is the table's id, except where the table reuses one
    (`craft_item:coal` names both a crafting and a smelting task): those rows become
    `spawn_file:goal`. ids: task ids, families (embodied = mine_block, gui = craft_item +
    smelt_item, combat, interact) or "all" (None: all), as in `base.select_tasks`."""
    rows = read_task_table(path)
    counts = collections.Counter(row["task"] for row in rows)
    tasks, seen = [], set()
    for row in rows:
        task_id = row["task"]
        if counts[task_id] > 1 and not task_id.startswith(row["spawn_file"] + ":"):
            task_id = f"{row['spawn_file']}:{row['goal']}"
        if task_id in seen:
            raise ValueError(f"{path or 'minecraft_tasks.tsv'}: duplicate task id {task_id!r}")
        seen.add(task_id)
        spawn = {
            "source_id": row["task"],
            "spawn_file": row["spawn_file"],
            "goal": row["goal"],
            "tools": tuple(t for t in row["tools"].split("|") if t),
            "needs": row["needs"],
            "init_inventory": tuple(i for i in row["init_inventory"].split(";") if i),
            "position": tuple(float(v) for v in row["position"].split(","))
            if row["position"]
            else (),
            "label": row["label"],
        }
        tasks.append(
            Task(
                task_id=task_id,
                suite=SUITE,
                family=row["family"],
                instruction=instruction_for(row["spawn_file"], row["goal"]),
                seed=int(row["seed"]) if row["seed"] else None,
                max_steps=max_steps,
                spawn=spawn,
            )
        )
    return select_tasks(tasks, ids, SUITE)


# ---------------------------------------------------------------- actions


def camera_to_bin(degrees: float) -> int:
    """Mu-law quantization of one camera angle (degrees, clipped to +-10) to a bin in [0, 21)."""
    x = float(np.clip(degrees, -CAMERA_MAX, CAMERA_MAX)) / CAMERA_MAX
    v = np.sign(x) * np.log1p(CAMERA_MU * abs(x)) / np.log1p(CAMERA_MU)
    return int(np.clip(np.rint((v + 1.0) * CAMERA_CENTER_BIN), 0, CAMERA_BINS - 1))


def bin_to_camera(b: int) -> float:
    """Centre (degrees) of a camera bin; the inverse of `camera_to_bin` on bin centres."""
    v = (int(b) - CAMERA_CENTER_BIN) / CAMERA_CENTER_BIN
    return float(np.sign(v) * np.expm1(abs(v) * np.log1p(CAMERA_MU)) / CAMERA_MU * CAMERA_MAX)


def noop_groups() -> np.ndarray:
    g = np.zeros(len(BASES), np.int32)
    g[10] = g[11] = CAMERA_CENTER_BIN
    return g


def minerl_to_groups(action: Mapping[str, Any]) -> np.ndarray:
    """MineRL dict action -> the 12 group values (lowest hotbar key wins)."""
    g = noop_groups()
    pressed = lambda k: bool(np.asarray(action.get(k, 0)).item())
    g[0] = next((k for k in range(1, 10) if pressed(f"hotbar.{k}")), 0)
    for i, (a, b) in enumerate(_PAIRS, start=1):
        g[i] = 1 if pressed(a) and not pressed(b) else 2 if pressed(b) and not pressed(a) else 0
    for i, key in enumerate(_BINARY, start=4):
        if key is not None:
            g[i] = int(pressed(key))
    pitch, yaw = np.asarray(action.get("camera", (0.0, 0.0)), np.float64).reshape(2)
    g[10], g[11] = camera_to_bin(pitch), camera_to_bin(yaw)
    g[8] = int((g[10], g[11]) != (CAMERA_CENTER_BIN, CAMERA_CENTER_BIN))
    return g


def groups_to_minerl(groups: Sequence[int]) -> dict[str, Any]:
    """12 group values -> MineRL dict action (camera (0, 0) unless the camera flag is set)."""
    g = [int(v) for v in groups]
    if len(g) != len(BASES) or any(not 0 <= v < base for v, base in zip(g, BASES)):
        raise ValueError(f"Minecraft group values must be 12 ints within bases {BASES}, got {g}")
    act: dict[str, Any] = {k: 0 for k in BUTTONS}
    if g[0]:
        act[f"hotbar.{g[0]}"] = 1
    for i, (a, b) in enumerate(_PAIRS, start=1):
        if g[i]:
            act[a if g[i] == 1 else b] = 1
    for i, key in enumerate(_BINARY, start=4):
        if key is not None:
            act[key] = g[i]
    cam = (bin_to_camera(g[10]), bin_to_camera(g[11])) if g[8] else (0.0, 0.0)
    act["camera"] = np.asarray(cam, np.float32)
    return act


def action_space() -> gym.spaces.Dict:
    """MineRL 0.4's action space (the subset the JARVIS-VLA groups drive)."""
    spaces = {k: gym.spaces.Discrete(2) for k in BUTTONS}
    spaces["camera"] = gym.spaces.Box(-180.0, 180.0, (2,), np.float32)
    return gym.spaces.Dict(spaces)


def observation_space() -> gym.spaces.Dict:
    return gym.spaces.Dict({"pov": gym.spaces.Box(0, 255, (*FRAME_HW, 3), np.uint8)})


# ---------------------------------------------------------------- envs


class FakeMinecraftEnv:
    """MineRL-0.4-shaped stand-in (old gym API): deterministic frames, scripted success.

    The frame encodes the seed, the tick and the camera angles as colour bands; the task
    succeeds (reward 1, done) once `attack` has been pressed on `success_after` ticks.
    """

    def __init__(self, success_after: int = 8):
        self.action_space = action_space()
        self.observation_space = observation_space()
        self.success_after = success_after
        self._seed = 0

    def seed(self, seed: int | None) -> None:
        self._seed = 0 if seed is None else int(seed) % (2**31)

    def reset(self):
        self._tick, self._attacks = 0, 0
        self._pitch, self._yaw = 0.0, 0.0
        return {"pov": self._frame()}

    def step(self, action: Mapping[str, Any]):
        if not self.action_space.contains({k: action[k] for k in self.action_space.spaces}):
            raise ValueError(f"action outside the MineRL action space: {action}")
        self._tick += 1
        self._attacks += int(action["attack"])
        self._pitch = float(np.clip(self._pitch + action["camera"][0], -90, 90))
        self._yaw = float((self._yaw + action["camera"][1]) % 360.0)
        success = self._attacks >= self.success_after
        return {"pov": self._frame()}, float(success), success, {"success": success}

    def _frame(self) -> np.ndarray:
        h, w = FRAME_HW
        frame = np.empty((h, w, 3), np.uint8)
        horizon = int(np.clip(h / 2 + self._pitch * 2, 0, h))
        frame[:horizon] = (100 + self._seed % 100, 150, 230)  # sky
        frame[horizon:] = (80, 60 + self._tick % 100, 40)  # ground
        cols = (np.arange(w) + int(self._yaw * w / 360.0)) % w
        frame[h - 20 :, cols < w // 8, :] = 255  # a landmark that moves with yaw
        frame[:10, : min(w, self._attacks * 10), 0] = 255  # attack progress bar
        return frame

    def close(self) -> None:
        pass


def _make_minerl_backend(task: Task):
    """A real MineRL 0.4 HumanSurvival env (640x360). Task set-up (inventory, spawn point)
    needs MineStudio-style callbacks and is not applied here."""
    try:
        from minerl.herobraine.env_specs.human_survival_specs import HumanSurvival
    except ImportError as e:
        raise ImportError(
            f"Minecraft task {task.task_id!r} needs MineRL: `pip install grow_jax[minecraft]`; "
            "MineRL 0.4.4 also needs Java 8 (a JDK) and downloads the Minecraft game files on "
            "first launch (internet access required). Tests use FakeMinecraftEnv instead."
        ) from e
    return HumanSurvival(resolution=(FRAME_HW[1], FRAME_HW[0])).make()


class MineRLEnv:
    """Adapter: JARVIS-VLA group actions -> MineRL dict actions; pov frame -> observation.

    `backend` is an old-gym-API MineRL-style env (default: a real MineRL env, built lazily).
    Reward per decision is the sum over its ticks; success = backend info["success"] when
    given, else a positive reward.
    """

    def __init__(self, task: Task, backend: Any = None, chunk: int = ACTIONS_PER_DECISION):
        self.task = task
        self.chunk = chunk
        self._backend = backend if backend is not None else _make_minerl_backend(task)
        self._max_steps = task.max_steps or DEFAULT_MAX_STEPS

    def reset(self, seed: int | None = None):
        seed = self.task.seed if seed is None else seed
        self._backend.seed(seed)
        self._steps = 0
        return make_obs(self._backend.reset()["pov"], self.task.instruction)

    def step(self, action):
        rows = np.asarray(action, np.int64).reshape(-1, len(BASES))
        if rows.shape[0] > self.chunk:
            raise ValueError(
                f"at most {self.chunk} low-level actions per decision, got {rows.shape[0]}"
            )
        total, done, success, obs = 0.0, False, False, None
        for row in rows:
            obs, reward, done, info = self._backend.step(groups_to_minerl(row))
            total += float(reward)
            success = bool(info.get("success", reward > 0))
            if done or success:
                break
        self._steps += 1
        terminated = bool(done or success)
        truncated = bool(not terminated and self._steps >= self._max_steps)
        return (
            make_obs(obs["pov"], self.task.instruction),
            total,
            terminated,
            truncated,
            {"success": success},
        )

    def close(self):
        self._backend.close()


def make_env(task: Task, backend: Any | Callable[[], Any] | None = None, fake: bool = False,
             chunk: int = ACTIONS_PER_DECISION, **unused) -> MineRLEnv:  # fmt: skip
    """Env of a Minecraft task; `fake=True` uses FakeMinecraftEnv (no Java, no game files)."""
    del unused
    if fake:
        backend = FakeMinecraftEnv()
    elif callable(backend) and not hasattr(backend, "step"):
        backend = backend()
    return MineRLEnv(task, backend=backend, chunk=chunk)
