"""build_prompt_ids matches the chat template (image pads expanded) and the compact mode."""

import numpy as np
import pytest

from grow_jax.agent.prompts import PromptConfig, build_prompt_ids
from grow_jax.agent.tokenizer import load_tokenizer, special_token_ids

TOK = load_tokenizer()


def _template_ids(messages, n, add_default_system=True):
    text = TOK.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not add_default_system:
        text = text.removeprefix("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    text = text.replace("<|image_pad|>", "<|image_pad|>" * n)
    return TOK.encode(text, add_special_tokens=False)


def _user(text=None):
    content = [{"type": "image"}] + ([{"type": "text", "text": text}] if text else [])
    return {"role": "user", "content": content}


@pytest.mark.parametrize("n", [1, 4, 16])
def test_full_mode_equals_chat_template(n):
    instr = "pick up the blue key"
    ids = build_prompt_ids(TOK, instr, n)
    assert ids == _template_ids([_user(instr)], n, add_default_system=False)
    cfg = PromptConfig(system="You play BabyAI.")
    ids = build_prompt_ids(TOK, instr, n, config=cfg)
    assert ids == _template_ids(
        [{"role": "system", "content": "You play BabyAI."}, _user(instr)], n
    )


def test_history_turns_equal_chat_template():
    frame = np.zeros((4, 4, 3), np.uint8)
    hist = [(frame, "left"), (frame, "forward"), (frame, "toggle")]
    ids = build_prompt_ids(TOK, "open the door", 4, history=hist, config=PromptConfig(history=2))
    msgs = [
        _user("open the door"),
        {"role": "assistant", "content": "forward"},
        _user(),
        {"role": "assistant", "content": "toggle"},
        _user(),
    ]
    assert ids == _template_ids(msgs, 4, add_default_system=False)
    # history=0 (GROW's default) ignores the past
    assert build_prompt_ids(TOK, "open the door", 4, history=hist) == build_prompt_ids(
        TOK, "open the door", 4
    )


def test_compact_mode_is_short():
    sp = special_token_ids(TOK)
    ids = build_prompt_ids(TOK, "go to the red ball", 4, config=PromptConfig(compact=True))
    assert ids[:2] == [sp.im_start, sp.vision_start] and ids[-2:] == [sp.im_end, sp.im_start]
    assert ids.count(sp.image_pad) == 4 and len(ids) <= 25
    assert TOK.decode(ids[7:-2]) == "go to the red ball"
    with pytest.raises(ValueError, match="num_image_tokens"):
        build_prompt_ids(TOK, "x", 0)
