"""A scripted Crafter expert that plans on the true world state (the SFT demonstrator).

For a task's achievement it works backwards through Crafter's own recipe tables
(`crafter.constants`: collect / place / make): gather the missing inputs first (wood for a
table, a wood pickaxe before stone, ...), place a table when none is within reach, then
act. Moving is breadth-first search on the walkable, object-free tiles to a tile next to
the target; a move toward a blocked tile only turns the player, so it then faces the
target and does `do` / `place_*` / `make_*`. It replans every step (cows and zombies move).

Achievements it plays: every collect / place / make one, eat_cow, defeat_zombie,
defeat_skeleton and wake_up; not eat_plant (a sapling ripens only after 300+ steps).
How often it succeeds within an episode cap is measured by tests/envs/test_crafter_expert.py.
"""

from __future__ import annotations

import collections

import numpy as np

ACTIONS = (
    "noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep", "place_stone",
    "place_table", "place_furnace", "place_plant", "make_wood_pickaxe", "make_stone_pickaxe",
    "make_iron_pickaxe", "make_wood_sword", "make_stone_sword", "make_iron_sword",
)  # fmt: skip
_A = {name: i for i, name in enumerate(ACTIONS)}
_MOVE = {(-1, 0): _A["move_left"], (1, 0): _A["move_right"], (0, -1): _A["move_up"],
         (0, 1): _A["move_down"]}
_DIRS = tuple(_MOVE)
UNSUPPORTED = ("eat_plant",)
FIGHT_RANGE = 2  # a zombie this close is fought before anything else
SAFE_SLEEP = 8  # no sleeping while a zombie is this close (zombies chase within 8)
STATION_REACH = 8  # a station (table) this many steps away is walked to, not placed anew


class CrafterExpert:
    """The expert of one episode: `act()` is the action for the env's current state."""

    def __init__(self, env, achievement: str):
        from crafter import constants

        if achievement in UNSUPPORTED:
            raise ValueError(f"the Crafter expert cannot play {achievement!r} "
                             f"(unsupported: {', '.join(UNSUPPORTED)})")
        self.env, self.achievement, self.c = env, achievement, constants
        # item -> the material that yields it (wood <- tree, drink <- water, ...)
        self._source = {item: mat for mat, info in constants.collect.items()
                        for item in info["receive"]}
        self._turn = 0  # exploration direction when no target is reachable

    # ------------------------------------------------------------ world views
    @property
    def _player(self):
        return self.env._player

    @property
    def _world(self):
        return self.env._world

    def _ids(self, names) -> list[int]:
        ids = self._world._mat_ids
        return [ids[n] for n in names if n in ids]

    def _material_mask(self, names) -> np.ndarray:
        return np.isin(self._world._mat_map, self._ids(names))

    def _object_mask(self, cls_name: str) -> np.ndarray:
        mask = np.zeros(self._world.area, bool)
        for obj in self._world.objects:
            if type(obj).__name__ == cls_name:
                mask[tuple(obj.pos)] = True
        return mask

    def _passable(self) -> np.ndarray:
        w = self._world
        free = self._material_mask(self.c.walkable) & (w._obj_map == 0)
        free[tuple(self._player.pos)] = True
        return free

    # -------------------------------------------------------------- movement
    def _path_to(self, goal: np.ndarray, limit: int | None = None):
        """First move of a shortest walk to a tile where `goal` holds (None: none found,
        "here": already on one). `limit` bounds the walk's length."""
        start = tuple(int(v) for v in self._player.pos)
        if goal[start]:
            return "here"
        passable = self._passable()
        w, h = passable.shape
        first = {start: None}
        queue = collections.deque([(start, 0)])
        while queue:
            (x, y), dist = queue.popleft()
            if limit is not None and dist >= limit:
                continue
            for d in _DIRS:
                n = (x + d[0], y + d[1])
                if not (0 <= n[0] < w and 0 <= n[1] < h) or n in first or not passable[n]:
                    continue
                first[n] = d if first[(x, y)] is None else first[(x, y)]
                if goal[n]:
                    return _MOVE[first[n]]
                queue.append((n, dist + 1))
        return None

    def _next_to(self, target: np.ndarray) -> np.ndarray:
        """Tiles with a 4-neighbour in `target`."""
        out = np.zeros_like(target)
        out[1:] |= target[:-1]
        out[:-1] |= target[1:]
        out[:, 1:] |= target[:, :-1]
        out[:, :-1] |= target[:, 1:]
        return out

    def _face_and(self, target: np.ndarray, action: int, walkable_target: bool = False):
        """Walk next to a `target` tile, face it, then `action`."""
        pos, facing = self._player.pos, tuple(self._player.facing)
        ahead = (pos[0] + facing[0], pos[1] + facing[1])
        if _inside(ahead, target.shape) and target[ahead]:
            return action
        if walkable_target:  # a move onto a free target moves the player: step on, look on
            best = [d for d in _DIRS if self._at(target, pos, d, 1)]
            if best:
                beyond = [d for d in best if self._at(target, pos, d, 2)]
                return _MOVE[(beyond or best)[0]]
        else:
            for d in _DIRS:
                if self._at(target, pos, d, 1):
                    return _MOVE[d]  # blocked tile: the move only turns the player
        step = self._path_to(self._next_to(target))
        return self._explore() if step in (None, "here") else step

    @staticmethod
    def _at(mask, pos, d, k) -> bool:
        p = (pos[0] + k * d[0], pos[1] + k * d[1])
        return _inside(p, mask.shape) and bool(mask[p])

    def _explore(self) -> int:
        self._turn += 1
        return _MOVE[_DIRS[(self._turn // 8) % 4]]

    # ----------------------------------------------------------------- goals
    def act(self) -> int:
        a = self.achievement
        kind, name = a.split("_", 1)
        if self._zombies(FIGHT_RANGE).any():  # a zombie closing in: fight it first
            return self._face_and(self._zombies(FIGHT_RANGE), _A["do"])
        if a == "wake_up":  # not while a zombie may come (7 damage to a sleeper)
            energy_max = self.c.items["energy"]["max"]
            tired = self._player.inventory["energy"] < energy_max
            return _A["sleep"] if tired and not self._zombies(SAFE_SLEEP).any() else _A["noop"]
        if a == "eat_cow":
            return self._attack("Cow")
        if kind == "defeat":
            return self._attack(name.capitalize())
        if kind == "collect":
            return self._obtain(name, self._player.inventory[name] + 1, fresh=True)
        if kind == "place":
            return self._place(name)
        if kind == "make":
            return self._make(name)
        raise ValueError(f"unknown Crafter achievement {a!r}")

    def _obtain(self, item: str, n: int, fresh: bool = False) -> int | None:
        """An action toward holding `n` of `item`; None once held (fresh: collect anyway,
        the achievement counts collecting, not holding)."""
        if self._player.inventory[item] >= n and not fresh:
            return None
        if item in self.c.make:
            return self._make(item)
        material = self._source[item]
        for req, k in self.c.collect[material]["require"].items():
            a = self._obtain(req, k)
            if a is not None:
                return a
        target = self._material_mask([material])
        if material == "grass":  # a sapling: `do` on grass with nothing on it (10% a time)
            target &= self._world._obj_map == 0
        return self._face_and(target, _A["do"], walkable_target=material in self.c.walkable)

    def _needs(self, uses: dict, extra: dict | None = None) -> int | None:
        total = collections.Counter(uses)
        total.update(extra or {})
        for item, k in total.items():
            a = self._obtain(item, k)
            if a is not None:
                return a
        return None

    def _place(self, name: str) -> int:
        info = self.c.place[name]
        a = self._needs(info["uses"])
        if a is not None:
            return a
        target = self._material_mask(info["where"]) & (self._world._obj_map == 0)
        target[tuple(self._player.pos)] = False
        walkable = any(m in self.c.walkable for m in info["where"])
        return self._face_and(target, _A[f"place_{name}"], walkable_target=walkable)

    def _make(self, name: str) -> int:
        info = self.c.make[name]
        nearby, _ = self._world.nearby(self._player.pos, 1)
        missing = [s for s in info["nearby"] if s not in nearby]
        far = {s: self._path_to(self._near(s), STATION_REACH) for s in missing}
        extra = collections.Counter()
        for s, step in far.items():
            if step is None:  # none within reach: it will be placed
                extra.update(self.c.place[s]["uses"])
        a = self._needs(info["uses"], extra)
        if a is not None:
            return a
        for s, step in far.items():
            return self._place(s) if step is None else step
        return _A[f"make_{name}"]

    def _near(self, station: str) -> np.ndarray:
        """Tiles within one step (8-neighbourhood) of a `station` tile: Crafter's `nearby`."""
        m = self._material_mask([station])
        out = m.copy()
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                out |= np.roll(np.roll(m, dx, 0), dy, 1)
        return out

    def _attack(self, cls_name: str) -> int:
        return self._face_and(self._object_mask(cls_name), _A["do"])

    def _zombies(self, within: int) -> np.ndarray:
        """Zombies within `within` steps (Manhattan) of the player."""
        mask = np.zeros(self._world.area, bool)
        for obj in self._world.objects:
            if type(obj).__name__ == "Zombie" and self._player.distance(obj) <= within:
                mask[tuple(obj.pos)] = True
        return mask


def _inside(p, shape) -> bool:
    return 0 <= p[0] < shape[0] and 0 <= p[1] < shape[1]
