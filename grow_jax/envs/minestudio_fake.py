"""A deterministic stand-in for MineStudio's `MinecraftSim` (action_type "env"), for tests.

`FakeMinecraftSim` has the real simulator's constructor arguments, action space and reset /
step flow: callbacks' `before_reset`, a hard engine reset unless one declines it, 20 empty
frames, `_wrap_obs_info` (info merged with the engine observation, `image` resized to
`obs_size`), `after_reset`; then per step `before_step`, the engine step, `after_step`. Its
`env` (`FakeEngine`) stands for MineStudio's HumanSurvival env: `step`, `noop_action`,
`execute_cmd` (a chat action) and observations with `pov`, `inventory` (slot -> type and
quantity) and the per-event statistics (`mine_block`, `craft_item`, `kill_entity`, `custom`).
It applies the inventory, teleport, clear and summon commands it receives, logs every command,
and reports statistics from a `script` the test chooses.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from grow_jax.envs.minestudio import FRAME_WH, INVENTORY_SLOTS

ENV_BUTTONS = ("attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use",
               *(f"hotbar.{k}" for k in range(1, 10)), "inventory")  # fmt: skip
STAT_EVENTS = ("mine_block", "craft_item", "kill_entity", "custom", "use_item", "pickup",
               "break_item", "damage_dealt")  # fmt: skip
# The engine's own no-op also carries keys the env-type action space does not list.
_ENGINE_ONLY = ("pickItem", "chat")
_REPLACE = re.compile(r"^/replaceitem entity @p (\S+) minecraft:(\S+) (\d+)")
_SUMMON = re.compile(r"summon minecraft:(\S+)")
# (event, key, increment) reports of one step, from (engine, action).
Script = Callable[["FakeEngine", Mapping[str, Any]], Iterable[tuple[str, str, float]]]


def env_action_space() -> gym.spaces.Dict:
    """`MinecraftSim(action_type="env").action_space`."""
    spaces: dict[str, gym.Space] = {k: gym.spaces.Discrete(2) for k in ENV_BUTTONS}
    spaces["camera"] = gym.spaces.Box(-180.0, 180.0, (2,), np.float32)
    return gym.spaces.Dict(spaces)


def goal_after_attacks(event: str, goal: str, attacks: int = 8) -> Script:
    """The goal's statistic rises by one on the step that brings the attack count to `attacks`."""

    def script(engine: FakeEngine, action: Mapping[str, Any]):
        return [(event, goal, 1.0)] if action["attack"] and engine.attacks == attacks else []

    return script


def _slot_index(name: str) -> int:
    if name == "weapon.mainhand":
        return 0
    kind, _, k = name.partition(".")
    return int(k) if kind == "hotbar" else 9 + int(k)


class FakeEngine:
    """The engine behind `FakeMinecraftSim.env` (MineRL's old gym API plus `execute_cmd`).

    `commands` logs every chat command since construction; `attacks` counts attack ticks
    since the last hard reset.
    """

    def __init__(self, render_size: tuple[int, int], script: Script):
        self.render_size = tuple(render_size)
        self.script = script
        self.action_space = env_action_space()
        self.commands: list[str] = []
        self.hard_resets = 0
        self._seed = 0

    def seed(self, seed: int) -> None:
        self._seed = int(seed) % (2**31)

    def noop_action(self) -> dict:
        act: dict[str, Any] = {k: 0 for k in (*ENV_BUTTONS, "pickItem")}
        act["camera"] = np.zeros(2, np.float32)
        act["chat"] = ""
        return act

    def reset(self) -> dict:
        self.hard_resets += 1
        self.tick = self.attacks = 0
        self.pitch = self.yaw = 0.0
        self.gui_open = False
        self.position = (0.0, 64.0, 0.0)
        self.entities: list[str] = []
        self._frame_key = None
        self.inventory = {i: ("none", 0) for i in range(INVENTORY_SLOTS)}
        self.stats = {e: collections.defaultdict(float) for e in STAT_EVENTS}
        return self._obs()

    def step(self, action: Mapping[str, Any]):
        bad = [k for k in ENV_BUTTONS if action.get(k) not in (0, 1)]
        camera = np.asarray(action.get("camera", ()), np.float64)
        if camera.shape != (2,) or np.any(np.abs(camera) > 180.0):
            bad.append("camera")
        if bad:
            raise ValueError(f"action outside MineStudio's env action space (keys {bad}): "
                             f"{dict(action)}")  # fmt: skip
        if action.get("chat"):
            self._command(str(action["chat"]))
        self.tick += 1
        self.attacks += int(action["attack"])
        if action["inventory"]:
            self.gui_open = not self.gui_open
        pitch, yaw = camera
        self.pitch = float(np.clip(self.pitch + pitch, -90.0, 90.0))
        self.yaw = float((self.yaw + yaw) % 360.0)
        for event, key, n in self.script(self, action):
            self.stats[event][key] += n
        return self._obs(), 0.0, False, {}

    def execute_cmd(self, command: str):
        act = self.noop_action()
        act["chat"] = command
        return self.step(act)

    def _command(self, cmd: str) -> None:
        self.commands.append(cmd)
        if m := _REPLACE.match(cmd):
            self.inventory[_slot_index(m[1])] = (m[2], int(m[3]))
        elif cmd.startswith("/tp @s "):
            self.position = tuple(float(v) for v in cmd.split()[2:5])
        elif cmd == "/clear":
            self.inventory = {i: ("none", 0) for i in range(INVENTORY_SLOTS)}
        elif cmd == "/kill @e[type=!player]":
            self.entities = []
        elif m := _SUMMON.search(cmd):
            self.entities.append(m[1])

    def _frame(self) -> np.ndarray:
        key = (self.pitch, self.yaw, self.attacks, self.gui_open)
        if self._frame_key != key:
            w, h = self.render_size
            horizon = int(np.clip(h / 2 + self.pitch * 2, 0, h))
            rows = np.empty((h, 1, 3), np.uint8)
            rows[:horizon, 0] = (100 + self._seed % 100, 150, 230)  # sky
            rows[horizon:, 0] = (80, 60, 40)  # ground
            frame = np.repeat(rows, w, axis=1)
            start = -int(self.yaw * w / 360.0) % w  # a landmark that moves with yaw
            for a, b in ((start, min(w, start + w // 8)), (0, max(0, start + w // 8 - w))):
                frame[h - 20 :, a:b] = 255
            frame[:10, : min(w, self.attacks * 10), 0] = 255  # attack progress bar
            if self.gui_open:
                frame[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 198  # the GUI panel
            self._frame_key, self._frame_cache = key, frame
        return self._frame_cache

    def _obs(self) -> dict:
        obs = {"pov": self._frame(), "is_gui_open": self.gui_open,
               "inventory": {i: {"type": t, "quantity": n} for i, (t, n) in
                             self.inventory.items()},
               "location_stats": dict(zip(("xpos", "ypos", "zpos"), self.position))}  # fmt: skip
        obs.update({e: dict(v) for e, v in self.stats.items()})
        return obs

    def close(self) -> None:
        pass


class FakeMinecraftSim:
    """`MinecraftSim` of MineStudio, action_type "env", over a `FakeEngine`."""

    def __init__(self, action_type: str = "env", obs_size: tuple[int, int] = (224, 224),
                 render_size: tuple[int, int] = FRAME_WH, seed: int = 0,
                 num_empty_frames: int = 20, callbacks: Sequence[Any] = (),
                 script: Script | None = None):  # fmt: skip
        if action_type != "env":
            raise ValueError(f"FakeMinecraftSim has action_type='env' only, got {action_type!r}")
        self.obs_size, self.render_size, self.seed = tuple(obs_size), tuple(render_size), seed
        self.num_empty_frames = num_empty_frames
        self.callbacks = list(callbacks)
        self.env = FakeEngine(render_size, script or (lambda engine, action: ()))
        self.env.seed(seed)
        self.already_reset = False
        self.info: dict | None = None
        self.closed = False

    @property
    def action_space(self) -> gym.spaces.Dict:
        return self.env.action_space

    @property
    def observation_space(self) -> gym.spaces.Dict:
        # As MineStudio declares it: (height, width) = obs_size, although the image it returns
        # is cv2.resize(pov, dsize=obs_size), i.e. obs_size[1] x obs_size[0].
        return gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (*self.obs_size, 3), np.uint8)})

    def noop_action(self) -> dict:
        act = self.env.noop_action()
        for k in _ENGINE_ONLY:
            act.pop(k)
        return act

    def reset(self):
        hard = True
        for cb in self.callbacks:
            hard = cb.before_reset(self, hard)
        if hard:
            self.env.reset()
            self.already_reset = True
        obs, info = None, {}
        for _ in range(self.num_empty_frames):
            obs, _, _, info = self.env.step(self.env.noop_action())
        obs, info = self._wrap_obs_info(obs if obs is not None else self.env._obs(), info)
        for cb in self.callbacks:
            obs, info = cb.after_reset(self, obs, info)
        return obs, info

    def step(self, action: dict):
        for cb in self.callbacks:
            action = cb.before_step(self, action)
        obs, reward, done, info = self.env.step(dict(action))
        terminated = truncated = done
        obs, info = self._wrap_obs_info(obs, info)
        for cb in self.callbacks:
            obs, reward, terminated, truncated, info = cb.after_step(
                self, obs, reward, terminated, truncated, info)
        return obs, reward, terminated, truncated, info

    def _wrap_obs_info(self, obs: dict, info: dict):
        merged = dict(info)
        merged.update(obs)
        pov = obs["pov"]
        w, h = self.obs_size
        if pov.shape[:2] != (h, w):  # nearest-neighbour stand-in for cv2.resize
            pov = pov[np.arange(h) * pov.shape[0] // h][:, np.arange(w) * pov.shape[1] // w]
        if self.info is None:
            self.info = {}
        self.info.update(merged)
        return {"image": np.array(pov)}, dict(self.info)

    def close(self) -> None:
        for cb in self.callbacks:
            cb.before_close(self)
        self.env.close()
        for cb in self.callbacks:
            cb.after_close(self)
        self.closed = True
