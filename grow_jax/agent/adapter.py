"""The agent the rollout loop drives: prompt building + action codec for one suite."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from grow_jax.agent.codecs import COT_INSTRUCTION, CotCodec, make_codec
from grow_jax.agent.prompts import PromptConfig, build_prompt_ids
from grow_jax.agent.tokenizer import special_token_ids


class PolicyAgent:
    """Turns (instruction, recent actions) into prompt ids and sampled tokens into actions.

    `history` is how many previous decisions each prompt shows (0 in GROW: instruction and
    current frame only).
    """

    def __init__(self, tokenizer, suite: str, *, history: int = 0, compact: bool = False,
                 system: str | None = None, cot_tokens: int = 0):
        """cot_tokens > 0: ppo_cot's agent, whose prompt asks for thoughts before the action
        and whose output (at most cot_tokens) is parsed by `CotCodec`."""
        self.tokenizer = tokenizer
        self.codec = make_codec(suite, tokenizer)
        self.cot = cot_tokens > 0
        if self.cot:
            self.codec = CotCodec(self.codec, tokenizer, cot_tokens)
        self.history = int(history)
        self.prompt_config = PromptConfig(compact=compact, system=system, history=self.history)
        ids = special_token_ids(tokenizer)
        self.pad_id = ids.pad
        self.stop_ids = (ids.im_end,)
        self._turn_sep = np.asarray(
            [] if compact else tokenizer.encode("\n", add_special_tokens=False), np.int32)

    def prompt_ids(self, instruction: str, shown: Sequence, image_tokens: int) -> np.ndarray:
        """Prompt ids after the previous steps `shown` (rollout `Step`s).

        history >= 0: rendered from the instruction and the shown steps' action texts.
        history < 0 (whole conversation): the previous prompt + the tokens actually sampled
        + the next user turn, so every prompt extends the one before token for token and a
        trajectory-level sample reproduces the behaviour context exactly.
        """
        if self.cot:
            instruction = instruction + COT_INSTRUCTION
        if self.history >= 0 or not shown:
            history = [(None, st.action_text) for st in shown]
            cfg = dataclasses.replace(self.prompt_config, history=len(history))
            return np.asarray(build_prompt_ids(self.tokenizer, instruction, image_tokens,
                                               history, cfg), np.int32)
        last = shown[-1]
        action = list(last.action_ids)
        if not action or action[-1] != self.stop_ids[0]:
            action.append(self.stop_ids[0])  # close the turn the model left open
        turn = build_prompt_ids(self.tokenizer, "", image_tokens, (),
                                dataclasses.replace(self.prompt_config, system=None,
                                                    history=0))
        return np.concatenate([last.prompt_ids, action, self._turn_sep, turn]).astype(np.int32)

    def decode(self, action_ids: np.ndarray) -> tuple[Any, bool, str]:
        action, valid = self.codec.decode(action_ids)
        if hasattr(self.codec, "action_text"):
            text = self.codec.action_text(action) if valid else "(invalid)"
        else:
            text = self.tokenizer.decode(list(action_ids))
        return action, valid, text

    def encode(self, action) -> list[int]:
        return self.codec.encode(action)

    def thought_len(self, action_ids) -> int:
        """ppo_cot: how many leading sampled tokens are thoughts (weighted cot_lambda)."""
        return self.codec.thought_len(action_ids) if self.cot else 0


def make_agent(config, tokenizer) -> PolicyAgent:
    a = config.agent
    return PolicyAgent(tokenizer, config.env.suite, history=a.history,
                       compact=a.compact_prompt,
                       cot_tokens=a.max_new_tokens if config.algo.name == "ppo_cot" else 0)
