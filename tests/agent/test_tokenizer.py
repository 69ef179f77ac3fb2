"""The shipped tokenizer: offline loading, Qwen2-VL specials and template, single-token actions."""

import json
import os

from transformers import AutoTokenizer

from grow_jax.agent import tokenizer as T
from grow_jax.envs import babyai
from grow_jax.envs.minecraft import BASES

DIR = T.default_tokenizer_dir()


def test_files_and_offline_autotokenizer():
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert os.path.isfile(os.path.join(DIR, name))
    with open(os.path.join(DIR, "tokenizer_config.json")) as f:
        assert json.load(f)["chat_template"] == T.CHAT_TEMPLATE
    tok = AutoTokenizer.from_pretrained(DIR, local_files_only=True)
    assert 1000 <= len(tok) <= 2000
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for s in T.QWEN2VL_SPECIAL_TOKENS + T.MINECRAFT_ACTION_TOKENS:
        assert tok.convert_ids_to_tokens(tok.encode(s)) == [s]
    assert len(set(tok.convert_tokens_to_ids(list(T.MINECRAFT_ACTION_TOKENS)))) == sum(BASES) == 73


def test_special_token_ids():
    tok = T.load_tokenizer()
    ids = T.special_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids.image_pad) == "<|image_pad|>"
    assert tok.convert_ids_to_tokens(ids.im_end) == "<|im_end|>"
    assert ids.pad == ids.endoftext
    assert len({ids.im_start, ids.im_end, ids.vision_start, ids.vision_end, ids.image_pad,
                ids.video_pad, ids.endoftext}) == 7  # fmt: skip


def test_chat_template_renders_like_qwen2_vl():
    tok = T.load_tokenizer()
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "go to the red ball"}],
        }
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>go to the red ball"
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_action_words_single_tokens_and_missions_round_trip():
    tok = T.load_tokenizer()
    for w in T.TEXT_ACTION_WORDS:
        assert len(tok.encode(w, add_special_tokens=False)) == 1, w
    for task in babyai.make_tasks(
        ids=["BabyAI-PutNextLocal-v0", "BabyAI-Synth-v0"], seeds=range(5)
    ):
        ids = tok.encode(task.instruction, add_special_tokens=False)
        assert tok.decode(ids) == task.instruction
        assert len(ids) < 3 * len(task.instruction.split())
    for s in ["mine oak log", "craft crafting table", "kill zombie", "x=12, y=-3.5!", "héllo ☃"]:
        assert tok.decode(tok.encode(s, add_special_tokens=False)) == s


def test_load_tokenizer_missing_dir(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="build_tokenizer"):
        T.load_tokenizer(tmp_path)
