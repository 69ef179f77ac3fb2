"""Prompt token ids for one decision, in Qwen2-VL's chat format (or a compact variant).

full:    [<|im_start|>system\\n{system}<|im_end|>\\n]
         (<|im_start|>user\\n<|vision_start|>{pad*n}<|vision_end|>{text}<|im_end|>\\n
          <|im_start|>assistant\\n{action}<|im_end|>\\n)*  for each history pair
         <|im_start|>user\\n<|vision_start|>{pad*n}<|vision_end|>{text}<|im_end|>\\n
         <|im_start|>assistant\\n
compact: the same without role words and newlines (for tiny CPU models: ~25 tokens).
The instruction is in the first user turn only; later turns carry just their frame. Frames
are passed to the image processor separately, oldest first, current last.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from grow_jax.agent.tokenizer import special_token_ids


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """Attributes:
    compact: drop role words and newlines (tiny models); False = Qwen2-VL chat format.
    system: system prompt text, or None for no system turn (GROW's agent uses none).
    history: number of previous (frame, action) turns kept (GROW: 0).
    """

    compact: bool = False
    system: str | None = None
    history: int = 0


_special_ids = functools.lru_cache(maxsize=16)(special_token_ids)


@functools.lru_cache(maxsize=4096)
def _encode(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def build_prompt_ids(
    tokenizer,
    instruction: str,
    num_image_tokens: int,
    history: Sequence[tuple[Any, str]] = (),
    config: PromptConfig = PromptConfig(),
) -> list[int]:
    """Token ids of the prompt; the model continues with the action and <|im_end|>.

    history: all previous (frame, action_text) pairs of the episode; the last
    `config.history` are rendered.
    """
    if num_image_tokens < 1:
        raise ValueError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
    sp = _special_ids(tokenizer)
    enc = functools.partial(_encode, tokenizer)
    nl = [] if config.compact else list(enc("\n"))

    def role(name: str) -> list[int]:
        return [sp.im_start] + ([] if config.compact else list(enc(f"{name}\n")))

    def user(text: str) -> list[int]:
        image = [sp.vision_start] + [sp.image_pad] * num_image_tokens + [sp.vision_end]
        return role("user") + image + list(enc(text) if text else ()) + [sp.im_end] + nl

    ids: list[int] = []
    if config.system is not None:
        ids += role("system") + list(enc(config.system)) + [sp.im_end] + nl
    kept = list(history)[len(history) - config.history :] if config.history > 0 else []
    for turn, (_, action_text) in enumerate(kept):
        ids += user(instruction if turn == 0 else "")
        ids += role("assistant") + list(enc(action_text)) + [sp.im_end] + nl
    ids += user("" if kept else instruction)
    ids += role("assistant")
    return ids
