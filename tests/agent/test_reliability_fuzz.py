"""Hostile model output: every suite's agent decode (codec + action text) on random token
ids, random bytes, empty, very long and partial-special-token output never raises and never
yields an action outside the env's action space."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grow_jax.agent.adapter import PolicyAgent
from grow_jax.agent.tokenizer import MINECRAFT_ACTION_TOKENS, load_tokenizer, special_token_ids
from grow_jax.envs import babyai, crafter, minecraft
from grow_jax.envs.minestudio_fake import env_action_space

TOK = load_tokenizer()
IM_END = special_token_ids(TOK).im_end
SUITES = ("babyai", "crafter", "minecraft")
AGENTS = {s: PolicyAgent(TOK, s) for s in SUITES}
MC_IDS = TOK.convert_tokens_to_ids(list(MINECRAFT_ACTION_TOKENS))
# pieces of special tokens: "<|im_end" without "|>", "<|vision_", a bare "<|", ...
PARTIAL = sorted({t for text in ("<|im_end", "<|im_start", "<|vision_", "<|", "|>", "<|reserved")
                  for t in TOK.encode(text, add_special_tokens=False)})

ids = st.one_of(
    st.integers(0, len(TOK) - 1),  # anything the sampler may emit
    st.integers(-(2**40), 2**40),  # and what it may not
    st.sampled_from([IM_END] * 4 + PARTIAL + MC_IDS),
)
outputs = st.one_of(
    st.lists(ids, max_size=80),
    st.lists(st.sampled_from(MC_IDS + [IM_END]), min_size=40, max_size=60),  # near-valid MC
    st.binary(max_size=200).map(
        lambda b: TOK.encode(b.decode("utf-8", "replace"), add_special_tokens=False)),
)


def _in_space(suite, action):
    if suite in ("babyai", "crafter"):
        n = len((babyai if suite == "babyai" else crafter).ACTION_NAMES)
        return isinstance(action, int) and 0 <= action < n
    rows = np.asarray(action)
    if rows.shape != (minecraft.ACTIONS_PER_DECISION, len(minecraft.BASES)):
        return False
    if not all(0 <= v < b for row in rows for v, b in zip(row, minecraft.BASES)):
        return False
    space = env_action_space()  # MineStudio MinecraftSim(action_type="env"); it has no drop key
    acts = [minecraft.groups_to_minerl(row) for row in rows]
    return all(space.contains({k: a[k] for k in space.spaces}) for a in acts)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(out=outputs, suite=st.sampled_from(SUITES), dtype=st.sampled_from([None, np.int32,
                                                                          np.int64]))
def test_decode_never_raises_and_stays_in_the_action_space(out, suite, dtype):
    if dtype is not None:
        out = np.asarray([t for t in out if np.iinfo(dtype).min <= t <= np.iinfo(dtype).max],
                         dtype)
    action, valid, text = AGENTS[suite].decode(out)
    assert isinstance(valid, bool) and isinstance(text, str)
    assert _in_space(suite, action), (suite, out, action)


@pytest.mark.parametrize("suite", SUITES)
def test_empty_and_very_long_output(suite):
    agent = AGENTS[suite]
    for out in ([], np.zeros(0, np.int32), [IM_END], [IM_END] * 10_000,
                list(range(10_000)), [2**62] * 100):
        action, valid, _ = agent.decode(out)
        assert not valid and _in_space(suite, action)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.lists(st.integers(-50, 50), min_size=12, max_size=12), min_size=1,
                     max_size=4))
def test_out_of_range_minecraft_bins_are_rejected_by_the_env(rows):
    """Group values outside BASES never reach MineRL: the env's step raises ValueError."""
    env = minecraft.make_env(minecraft.make_tasks()[0], fake=True)
    env.reset(0)
    arr = np.asarray(rows * (minecraft.ACTIONS_PER_DECISION // len(rows) + 1))
    arr = arr[:minecraft.ACTIONS_PER_DECISION]
    bad = any(not 0 <= v < b for row in arr for v, b in zip(row, minecraft.BASES))
    if bad:
        with pytest.raises(ValueError, match="bases"):
            env.step(arr)
    else:
        env.step(arr)
    env.close()
