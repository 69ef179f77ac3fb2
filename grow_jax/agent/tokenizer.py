"""The shipped tokenizer: a small byte-level BPE with Qwen2-VL's special tokens.

No model hub is reachable, so grow_jax ships its own tokenizer (built deterministically by
scripts/build_tokenizer.py) under grow_jax/assets/tokenizer/. It carries Qwen2-VL's special
token strings and chat template, one reserved token per Minecraft (group, value) action, and
makes every BabyAI and Crafter action word a single token.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os

from transformers import PreTrainedTokenizerFast

from grow_jax.envs.babyai import ACTION_NAMES as BABYAI_ACTIONS
from grow_jax.envs.crafter import ACTION_NAMES as CRAFTER_ACTIONS
from grow_jax.envs.minecraft import BASES, GROUPS

# Qwen2-VL's special tokens, in Qwen2-VL's id order.
QWEN2VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
TEXT_ACTION_WORDS = tuple(dict.fromkeys(BABYAI_ACTIONS + CRAFTER_ACTIONS))

# Qwen2-VL's chat template (system default, image/video items as vision_start/pad/end).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def minecraft_action_token(group: int, value: int) -> str:
    """Reserved token of JARVIS-VLA group `group` (0..11) taking `value`."""
    if not (0 <= group < len(BASES) and 0 <= value < BASES[group]):
        raise ValueError(f"no Minecraft action token for group {group} value {value}")
    return f"<|mc_{GROUPS[group]}_{value}|>"


MINECRAFT_ACTION_TOKENS = tuple(
    minecraft_action_token(g, v) for g, base in enumerate(BASES) for v in range(base)
)


def default_tokenizer_dir() -> str:
    return str(importlib.resources.files("grow_jax").joinpath("assets/tokenizer"))


def load_tokenizer(path: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Loads a HF tokenizer folder (default: the shipped one), offline."""
    path = default_tokenizer_dir() if path is None else os.fspath(path)
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        raise FileNotFoundError(
            f"no tokenizer.json in {path}; build the shipped one with scripts/build_tokenizer.py"
        )
    return PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
    im_start: int
    im_end: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int
    endoftext: int
    pad: int


def special_token_ids(tok: PreTrainedTokenizerFast) -> SpecialTokenIds:
    """Ids of the chat/vision special tokens (pad = the tokenizer's pad, <|endoftext|>)."""

    def get(s: str) -> int:
        i = tok.convert_tokens_to_ids(s)
        if i is None or i == tok.unk_token_id or tok.convert_ids_to_tokens(i) != s:
            raise KeyError(f"tokenizer has no special token {s!r}")
        return int(i)

    pad = tok.pad_token_id if tok.pad_token_id is not None else get("<|endoftext|>")
    return SpecialTokenIds(
        im_start=get("<|im_start|>"),
        im_end=get("<|im_end|>"),
        vision_start=get("<|vision_start|>"),
        vision_end=get("<|vision_end|>"),
        image_pad=get("<|image_pad|>"),
        video_pad=get("<|video_pad|>"),
        endoftext=get("<|endoftext|>"),
        pad=int(pad),
    )
