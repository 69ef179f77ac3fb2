"""Action codecs: env action <-> target token ids (always ending with <|im_end|>).

`decode` never raises: empty, overlong, garbled or unknown output maps to the no-op action
with valid=False (the trainer applies the format penalty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from grow_jax.agent.tokenizer import MINECRAFT_ACTION_TOKENS, special_token_ids
from grow_jax.envs import babyai, crafter, minecraft


class ActionCodec(Protocol):
    noop_action: Any
    num_tokens: int  # most tokens one decision may take, <|im_end|> included

    def encode(self, action: Any) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> tuple[Any, bool]: ...


def _until_im_end(token_ids: Sequence[int], im_end: int, limit: int) -> list[int] | None:
    """Tokens before the first <|im_end|>; None when there is none within `limit` tokens."""
    ids = []
    try:
        for t in list(token_ids)[:limit]:
            if int(t) == im_end:
                return ids
            ids.append(int(t))
    except (TypeError, ValueError, OverflowError):
        return None
    return None


class TextActionCodec:
    """Single-token action words (BabyAI, Crafter): one decision = word + <|im_end|>."""

    num_tokens = 2

    def __init__(self, tokenizer, action_names: Sequence[str], noop_action: int):
        self.action_names = tuple(action_names)
        self.noop_action = int(noop_action)
        self._im_end = special_token_ids(tokenizer).im_end
        self._ids = []
        for name in self.action_names:
            ids = tokenizer.encode(name, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"action word {name!r} is {len(ids)} tokens {ids}, expected 1; "
                                 "rebuild the tokenizer (scripts/build_tokenizer.py)")  # fmt: skip
            self._ids.append(ids[0])
        self._action_of_id = {t: a for a, t in enumerate(self._ids)}

    def encode(self, action: int) -> list[int]:
        action = int(action)
        if not 0 <= action < len(self._ids):
            raise ValueError(f"action {action} outside [0, {len(self._ids)})")
        return [self._ids[action], self._im_end]

    def decode(self, token_ids: Sequence[int]) -> tuple[int, bool]:
        ids = _until_im_end(token_ids, self._im_end, self.num_tokens)
        if ids is None or len(ids) != 1 or ids[0] not in self._action_of_id:
            return self.noop_action, False
        return self._action_of_id[ids[0]], True

    def action_text(self, action: int) -> str:
        return self.action_names[int(action)]


def babyai_codec(tokenizer) -> TextActionCodec:
    """BabyAI: 7 words; the no-op is 'done' (ends nothing unless the mission is complete)."""
    return TextActionCodec(tokenizer, babyai.ACTION_NAMES, babyai.ACTION_NAMES.index("done"))


def crafter_codec(tokenizer) -> TextActionCodec:
    return TextActionCodec(tokenizer, crafter.ACTION_NAMES, crafter.ACTION_NAMES.index("noop"))


class MinecraftActionCodec:
    """JARVIS-VLA-style tokens: per low-level action, 12 reserved tokens (one per group, in
    group order); `chunk` actions per decision, then <|im_end|>. Env action: int array
    [chunk, 12] of group values (see grow_jax.envs.minecraft)."""

    def __init__(self, tokenizer, chunk: int = minecraft.ACTIONS_PER_DECISION):
        self.chunk = chunk
        self.num_tokens = chunk * len(minecraft.BASES) + 1
        self._im_end = special_token_ids(tokenizer).im_end
        ids = tokenizer.convert_tokens_to_ids(list(MINECRAFT_ACTION_TOKENS))
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError("tokenizer lacks the reserved Minecraft action tokens")
        self._group_value_of_id = {}
        self._id_of = {}
        k = 0
        for g, base in enumerate(minecraft.BASES):
            for v in range(base):
                self._id_of[g, v] = ids[k]
                self._group_value_of_id[ids[k]] = (g, v)
                k += 1
        self.noop_action = np.stack([minecraft.noop_groups()] * chunk)

    def encode(self, action: np.ndarray | Sequence[Mapping[str, Any]]) -> list[int]:
        """Action: [chunk, 12] group values, or `chunk` MineRL dict actions."""
        if len(action) and isinstance(action[0], Mapping):
            action = np.stack([minecraft.minerl_to_groups(a) for a in action])
        rows = np.asarray(action, np.int64).reshape(-1, len(minecraft.BASES))
        if rows.shape[0] != self.chunk:
            raise ValueError(f"expected {self.chunk} low-level actions, got {rows.shape[0]}")
        out = []
        for row in rows:
            minecraft.groups_to_minerl(row)  # validates the ranges
            out += [self._id_of[g, int(v)] for g, v in enumerate(row)]
        return out + [self._im_end]

    def decode(self, token_ids: Sequence[int]) -> tuple[np.ndarray, bool]:
        ids = _until_im_end(token_ids, self._im_end, self.num_tokens)
        n = len(minecraft.BASES)
        if ids is None or len(ids) != self.chunk * n:
            return self.noop_action.copy(), False
        rows = np.zeros((self.chunk, n), np.int32)
        for k, t in enumerate(ids):
            gv = self._group_value_of_id.get(t)
            if gv is None or gv[0] != k % n:
                return self.noop_action.copy(), False
            rows[k // n, k % n] = gv[1]
        return rows, True

    def to_minerl(self, action: np.ndarray) -> list[dict[str, Any]]:
        return [minecraft.groups_to_minerl(row) for row in np.asarray(action)]


COT_MARKER = "Action:"
COT_INSTRUCTION = " First think briefly, then write Action: and the action."


class CotCodec:
    """ppo_cot (RL4VLM): the model writes thoughts, then `COT_MARKER`, then the suite's
    action tokens and <|im_end|>. No marker, or an unparseable action after it, maps to the
    suite's no-op with valid=False (the fallback action)."""

    def __init__(self, inner: ActionCodec, tokenizer, max_tokens: int):
        self.inner = inner
        self.noop_action = inner.noop_action
        self.num_tokens = max_tokens
        self._marker = list(tokenizer.encode(COT_MARKER, add_special_tokens=False))
        self._im_end = special_token_ids(tokenizer).im_end

    def _after_marker(self, ids: list[int]) -> int | None:
        m = len(self._marker)
        for i in range(len(ids) - m + 1):
            if ids[i:i + m] == self._marker:
                return i + m
        return None

    def encode(self, action: Any) -> list[int]:
        """Marker + action (empty thoughts): the SFT target that teaches the format."""
        return self._marker + self.inner.encode(action)

    def thought_len(self, token_ids: Sequence[int]) -> int:
        """Leading tokens that are thoughts (the marker included); all of them if no marker."""
        ids = [int(t) for t in token_ids]
        end = self._after_marker(ids)
        return len(ids) if end is None else end

    def decode(self, token_ids: Sequence[int]) -> tuple[Any, bool]:
        ids = _until_im_end(token_ids, self._im_end, self.num_tokens)
        end = None if ids is None else self._after_marker(ids)
        if end is None:
            return self.inner.decode([])[0], False
        return self.inner.decode(ids[end:] + [self._im_end])

    def __getattr__(self, name):  # action_text, to_minerl, ... of the suite's codec
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def make_codec(suite: str, tokenizer, **kwargs) -> ActionCodec:
    makers = {"babyai": babyai_codec, "crafter": crafter_codec, "minecraft": MinecraftActionCodec}
    if suite not in makers:
        raise KeyError(f"no action codec for suite {suite!r}; expected one of {tuple(makers)}")
    return makers[suite](tokenizer, **kwargs)
