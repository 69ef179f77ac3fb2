"""Action codecs: exact round trips, and decode never raises on arbitrary token lists."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grow_jax.agent.codecs import MinecraftActionCodec, make_codec
from grow_jax.agent.tokenizer import load_tokenizer, special_token_ids
from grow_jax.envs import babyai, crafter, minecraft
from grow_jax.envs.minestudio_fake import env_action_space

TOK = load_tokenizer()
IM_END = special_token_ids(TOK).im_end
CODECS = {s: make_codec(s, TOK) for s in ("babyai", "crafter", "minecraft")}


@pytest.mark.parametrize(
    "suite,names", [("babyai", babyai.ACTION_NAMES), ("crafter", crafter.ACTION_NAMES)]
)
def test_text_codecs_round_trip(suite, names):
    codec = CODECS[suite]
    assert codec.num_tokens == 2
    for a, name in enumerate(names):
        ids = codec.encode(a)
        assert len(ids) == 2 and ids[-1] == IM_END
        assert TOK.decode(ids[:1]) == name
        assert codec.decode(ids) == (a, True)
        assert codec.decode(ids + [5, 6]) == (a, True)  # text after <|im_end|> is ignored
    noop = codec.noop_action
    for bad in ([], [IM_END], ids[:1], ids[:1] * 2 + [IM_END], [3, IM_END], [10**9, IM_END]):
        assert codec.decode(bad) == (noop, False)


def _press(key):
    act = {k: 0 for k in minecraft.BUTTONS}
    act["camera"] = np.zeros(2, np.float32)
    if key is not None:
        act[key] = 1
    return act


def test_minecraft_codec_every_button_and_camera_bin():
    codec = CODECS["minecraft"]
    space = env_action_space()  # MineStudio MinecraftSim(action_type="env")
    assert codec.num_tokens == 4 * 12 + 1
    acts = [_press(k) for k in (None,) + minecraft.BUTTONS]
    for p, y in itertools.product(range(21), range(21)):
        a = _press(None)
        a["camera"] = np.array([minecraft.bin_to_camera(p), minecraft.bin_to_camera(y)], np.float32)
        acts.append(a)
    for k in range(0, len(acts), 4):
        chunk = (acts[k : k + 4] + [_press(None)] * 4)[:4]
        ids = codec.encode(chunk)
        assert len(ids) == codec.num_tokens and ids[-1] == IM_END
        groups, valid = codec.decode(ids)
        assert valid
        for want, got in zip(chunk, codec.to_minerl(groups)):
            assert space.contains({k: got[k] for k in space.spaces})
            for key in minecraft.BUTTONS:
                assert got[key] == want[key], key
            np.testing.assert_allclose(got["camera"], want["camera"], atol=1e-5)


def test_minecraft_groups_exhaustive_round_trip():
    codec = CODECS["minecraft"]
    for g, base in enumerate(minecraft.BASES):
        for v in range(base):
            row = minecraft.noop_groups()
            row[g] = v
            if g in (10, 11) and v != minecraft.CAMERA_CENTER_BIN:
                row[8] = 1  # camera motion implies the camera flag
            if g == 8 and v == 1:
                row[11] = 0
            chunk = np.stack([row] * 4)
            groups, valid = codec.decode(codec.encode(chunk))
            assert valid and np.array_equal(groups, chunk), (g, v)
            assert np.array_equal(minecraft.minerl_to_groups(minecraft.groups_to_minerl(row)), row)


def test_minecraft_camera_quantizer():
    assert minecraft.camera_to_bin(0.0) == 10
    assert minecraft.camera_to_bin(50.0) == 20 and minecraft.camera_to_bin(-50.0) == 0
    centers = [minecraft.bin_to_camera(b) for b in range(21)]
    assert centers[0] == -10.0 and centers[-1] == 10.0 and np.all(np.diff(centers) > 0)
    assert all(minecraft.camera_to_bin(c) == b for b, c in enumerate(centers))
    # mu-law: finer bins near zero
    assert centers[11] - centers[10] < centers[20] - centers[19]


def test_minecraft_codec_rejects_and_noops():
    codec = CODECS["minecraft"]
    good = codec.encode(codec.noop_action)
    swapped = good[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    for bad in ([], good[:-2] + [IM_END], swapped, good[:12] + [IM_END]):
        groups, valid = codec.decode(bad)
        assert not valid and np.array_equal(groups, codec.noop_action)
    with pytest.raises(ValueError, match="4 low-level"):
        codec.encode(codec.noop_action[:2])
    with pytest.raises(ValueError, match="bases"):
        codec.encode(np.full((4, 12), 30))
    assert MinecraftActionCodec(TOK, chunk=1).num_tokens == 13


token_lists = st.lists(
    st.one_of(st.integers(-5, len(TOK) + 5), st.sampled_from([IM_END] * 3 + [2**40, -(2**40)])),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ids=token_lists, suite=st.sampled_from(sorted(CODECS)))
def test_decode_never_raises(ids, suite):
    codec = CODECS[suite]
    action, valid = codec.decode(ids)
    assert isinstance(valid, bool)
    if not valid:
        assert np.array_equal(action, codec.noop_action)


def test_cot_codec_parses_thoughts_then_action_and_falls_back():
    from grow_jax.agent.codecs import COT_MARKER, CotCodec

    cot = CotCodec(CODECS["babyai"], TOK, max_tokens=16)
    marker = TOK.encode(COT_MARKER, add_special_tokens=False)
    thoughts = TOK.encode("the ball is ahead", add_special_tokens=False)
    fwd = babyai.ACTION_NAMES.index("forward")
    word = CODECS["babyai"].encode(fwd)  # word + <|im_end|>
    ids = thoughts + marker + word
    assert cot.decode(ids) == (fwd, True)
    assert cot.thought_len(ids) == len(thoughts) + len(marker)
    assert cot.encode(fwd) == marker + word  # the SFT target: the format, no thoughts
    noop = babyai.ACTION_NAMES.index("done")
    assert cot.decode(thoughts + word) == (noop, False)  # no marker -> fallback
    assert cot.thought_len(thoughts + word) == len(thoughts + word)
    assert cot.decode(thoughts + marker + thoughts[:1] + [IM_END]) == (noop, False)
    assert cot.decode(thoughts * 5 + marker + word) == (noop, False)  # over the budget
    assert cot.action_text(fwd) == "forward"
