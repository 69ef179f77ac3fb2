"""The agent the rollout loop drives: prompt building + action codec for one suite."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from grow_jax.agent.codecs import COT_INSTRUCTION, CotCodec, make_codec
from grow_jax.agent.prompts import PromptConfig, build_prompt_ids
from grow_jax.agent.tokenizer import special_token_ids
from grow_jax.config_utils import ConfigError


class PolicyAgent:
    """Turns (instruction, recent actions) into prompt ids and sampled tokens into actions.

    `history` is how many previous decisions each prompt shows (0 in GROW: instruction and
    current frame only).
    """

    def __init__(self, tokenizer, suite: str, *, history: int = 0, compact: bool = False,
                 system: str | None = None, max_prompt_tokens: int | None = None,
                 codec_kwargs: dict | None = None, cot_tokens: int = 0):
        """cot_tokens > 0: ppo_cot's agent, whose prompt asks for thoughts before the action
        and whose output (at most cot_tokens) is parsed by `CotCodec`."""
        self.tokenizer = tokenizer
        self.codec = make_codec(suite, tokenizer, **(codec_kwargs or {}))
        self.max_prompt_tokens = max_prompt_tokens
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
        ids = self._prompt_ids(instruction, shown, image_tokens)
        if self.max_prompt_tokens is not None and len(ids) > self.max_prompt_tokens:
            raise ConfigError(
                f"config error: a prompt of {len(ids)} tokens (after {len(shown)} shown "
                f"decisions, {image_tokens} tokens per frame) exceeds "
                f"'agent.max_prompt_tokens'={self.max_prompt_tokens}; raise it, or lower "
                "agent.history / env.image_size")
        return ids

    def _prompt_ids(self, instruction: str, shown: Sequence, image_tokens: int) -> np.ndarray:
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
        else:  # ids the vocabulary lacks (never sampled, but decode must not raise) are dropped
            n = len(self.tokenizer)
            text = self.tokenizer.decode([int(t) for t in action_ids if 0 <= int(t) < n])
        return action, valid, text

    def encode(self, action) -> list[int]:
        return self.codec.encode(action)

    def thought_len(self, action_ids) -> int:
        """ppo_cot: how many leading sampled tokens are thoughts (weighted cot_lambda)."""
        return self.codec.thought_len(action_ids) if self.cot else 0


def make_agent(config, tokenizer) -> PolicyAgent:
    """The run's agent; env.actions_per_decision sets the Minecraft codec's chunk (the text
    suites take exactly one action word per decision)."""
    a, e = config.agent, config.env
    chunk = e.actions_per_decision
    if e.suite == "minecraft":
        codec_kwargs = {"chunk": chunk}
    elif chunk == 1:
        codec_kwargs = {}
    else:
        raise ConfigError(f"config error: 'env.actions_per_decision' must be 1 for suite "
                          f"{e.suite!r} (one action word per decision), got {chunk}")
    agent = PolicyAgent(tokenizer, e.suite, history=a.history, compact=a.compact_prompt,
                        max_prompt_tokens=a.max_prompt_tokens, codec_kwargs=codec_kwargs,
                        cot_tokens=a.max_new_tokens if config.algo.name == "ppo_cot" else 0)
    need = getattr(agent.codec, "num_tokens", 1)
    if a.max_new_tokens < need:
        raise ConfigError(f"config error: 'agent.max_new_tokens'={a.max_new_tokens} is below "
                          f"the {need} tokens one {e.suite} decision takes "
                          f"(env.actions_per_decision={chunk})")
    return agent
