"""The agent the rollout loop drives: prompt building + action codec for one suite."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from grow_jax.agent.codecs import make_codec
from grow_jax.agent.prompts import PromptConfig, build_prompt_ids
from grow_jax.agent.tokenizer import special_token_ids


class PolicyAgent:
    """Turns (instruction, recent actions) into prompt ids and sampled tokens into actions.

    `history` is how many previous decisions each prompt shows (0 in GROW: instruction and
    current frame only).
    """

    def __init__(self, tokenizer, suite: str, *, history: int = 0, compact: bool = False,
                 system: str | None = None):
        self.tokenizer = tokenizer
        self.codec = make_codec(suite, tokenizer)
        self.history = int(history)
        self.prompt_config = PromptConfig(compact=compact, system=system, history=self.history)
        ids = special_token_ids(tokenizer)
        self.pad_id = ids.pad
        self.stop_ids = (ids.im_end,)

    def prompt_ids(self, instruction: str, actions: Sequence[str], num_images: int,
                   image_tokens: int) -> np.ndarray:
        if num_images != len(actions) + 1:
            raise ValueError(f"a prompt with {len(actions)} previous actions shows "
                             f"{len(actions) + 1} frames, got {num_images}")
        history = [(None, a) for a in actions]
        return np.asarray(build_prompt_ids(self.tokenizer, instruction, image_tokens, history,
                                           self.prompt_config), np.int32)

    def decode(self, action_ids: np.ndarray) -> tuple[Any, bool, str]:
        action, valid = self.codec.decode(action_ids)
        if hasattr(self.codec, "action_text"):
            text = self.codec.action_text(action) if valid else "(invalid)"
        else:
            text = self.tokenizer.decode(list(action_ids))
        return action, valid, text

    def encode(self, action) -> list[int]:
        return self.codec.encode(action)


def make_agent(config, tokenizer) -> PolicyAgent:
    a = config.agent
    return PolicyAgent(tokenizer, config.env.suite, history=a.history,
                       compact=a.compact_prompt)
