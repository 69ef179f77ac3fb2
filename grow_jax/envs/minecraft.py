"""Minecraft (the OpenHA task suite): the task table, JARVIS-VLA actions and `make_env`.

The simulator is MineStudio (grow_jax.envs.minestudio; a fake on its interface for tests).
Env actions are JARVIS-VLA group values: an int array [k, 12] (or [12]), one row per
low-level (50 ms) action, k <= actions_per_decision (4); MineStudio takes them as the
MineRL-format dict actions of its action_type "env" (`groups_to_minerl`).
Groups, in order, with their number of values (`BASES`):
  hotbar (0 = none, k = hotbar.k), forward/back (0, forward, back), left/right (0, left, right),
  sprint/sneak (0, sprint, sneak), use, drop, attack, jump, camera flag, inventory (0/1),
  camera pitch and yaw (21 mu-law bins, mu=20, +-10 degrees; bin 10 = no motion).
Opposite keys pressed together (forward+back, left+right, sprint+sneak) encode as 0.
The inventory group opens and closes the GUI (MineStudio's "inventory" key). MineStudio's
engine has no drop key: the "drop" entry of the dict is ignored there (JARVIS-VLA, also
trained on MineStudio, has the group all the same).
"""

from __future__ import annotations

import collections
import csv
import importlib.resources
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from grow_jax.envs.base import Task, select_tasks

SUITE = "minecraft"
DEFAULT_MAX_STEPS = 300  # decisions (= 1200 ticks = 60 s with chunk 4)
ACTIONS_PER_DECISION = 4
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
              "position", "label", "commands")  # fmt: skip


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
            "commands": tuple(c for c in row["commands"].split("|") if c),
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
    """MineRL-format dict action (MineStudio's "env" actions) -> the 12 group values (lowest
    hotbar key wins)."""
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
    """12 group values -> MineRL-format dict action, as MineStudio's action_type "env" takes
    it (camera (0, 0) unless the camera flag is set)."""
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


# ---------------------------------------------------------------- envs


def make_env(task: Task, fake: bool = False, actions_per_decision: int = ACTIONS_PER_DECISION,
             fast_reset: bool = False, obs_size: Sequence[int] = (640, 360),
             backend: Callable[..., Any] | None = None, **unused):  # fmt: skip
    """Env of a Minecraft task on MineStudio (see grow_jax.envs.minestudio).

    obs_size: (width, height) of the frames the agent gets (MineStudio resizes the 640x360
    render). fake=True: `FakeMinecraftSim` (no Java, no engine; the goal event fires after 8
    attack ticks). backend: a `(world_seed, callbacks) -> simulator` factory.
    """
    del unused
    from grow_jax.envs import minestudio

    size = tuple(int(v) for v in obs_size)
    if fake:
        from grow_jax.envs.minestudio_fake import FakeMinecraftSim, goal_after_attacks

        setup = minestudio.episode_setup(task, None)
        script = goal_after_attacks(setup.event, setup.goal)

        def backend(seed, callbacks):
            return FakeMinecraftSim(obs_size=size, seed=seed, callbacks=callbacks, script=script)

    elif backend is None:

        def backend(seed, callbacks):
            return minestudio.make_minestudio_sim(seed, callbacks, obs_size=size)

    return minestudio.MinecraftEnv(task, make_sim=backend,
                                   actions_per_decision=actions_per_decision,
                                   fast_reset=fast_reset, default_max_steps=DEFAULT_MAX_STEPS)
