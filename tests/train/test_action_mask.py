"""algo.action_tokens_only: one action word, then the stop token, in sampler and loss."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grow_jax.algo.grammar import TokenGrammar
from grow_jax.train.action_mask import action_grammar


def _agent(suite):
    from grow_jax.agent.adapter import make_agent
    from grow_jax.config_utils import base_config
    from grow_jax.train import builders

    c = base_config()
    c.env.suite = suite
    tok = builders.load_tokenizer(c)
    return make_agent(c, tok), builders.model_config(c, tok)


@pytest.mark.parametrize("suite,words", [("babyai", 7), ("crafter", 17)])
def test_a_word_first_then_only_the_stop_token(suite, words):
    agent, mcfg = _agent(suite)
    g = action_grammar(agent)
    vocab = mcfg.text.vocab_size
    first = {agent.encode(a)[0] for a in range(len(agent.codec.action_names))}
    prompt_end = int(agent.prompt_ids("go", [], 1)[-1])
    allowed = np.asarray(g.allowed(jnp.asarray([prompt_end, min(first)]), vocab))
    assert set(np.flatnonzero(allowed[0])) == first and len(first) == words
    assert set(np.flatnonzero(allowed[1])) == set(agent.stop_ids)


def test_bigram_closure_of_multi_token_words():
    g = TokenGrammar.from_sequences([[5, 6, 2], [5, 7, 2], [8, 2]])
    allowed = np.asarray(g.allowed(jnp.asarray([0, 5, 6, 8]), 10))
    assert [set(np.flatnonzero(r)) for r in allowed] == [{5, 8}, {6, 7}, {2}, {2}]


def test_free_text_codec_is_refused():
    agent = types.SimpleNamespace(codec=object(), stop_ids=(2,))
    with pytest.raises(ValueError, match="algo.action_tokens_only"):
        action_grammar(agent)


def test_sampler_draws_only_word_then_stop_and_the_stop_costs_nothing():
    """A random model at T = 2 breaks the format often without the grammar, never with it;
    under the grammar the stop token after a word has probability 1 (logprob 0)."""
    from flax import nnx

    from grow_jax.config_utils import base_config
    from grow_jax.sampling.generate import Sampler, SamplingParams
    from grow_jax.train import builders

    agent, mcfg = _agent("babyai")
    model = builders.build_model(mcfg, builders.make_mesh(base_config()), 0)
    params = nnx.state(model, nnx.Param)
    words = {agent.encode(a)[0] for a in range(7)}
    prompts = [np.asarray([1, 5 + i % 3, 1], np.int32) for i in range(32)]

    def draw(grammar):
        sp = SamplingParams(max_new_tokens=3, temperature=2.0, stop_token_ids=agent.stop_ids,
                            grammar=grammar)
        return Sampler(model, sp).sample(params, prompts, rng=jax.random.key(0))

    toks, lps = draw(action_grammar(agent))
    assert all(len(t) == 2 and t[0] in words and t[1] == agent.stop_ids[0] for t in toks)
    assert np.allclose([lp[1] for lp in lps], 0.0)
    free, _ = draw(None)
    assert sum(not (len(t) == 2 and t[0] in words) for t in free) > 16


def test_drop_stop_targets_keeps_words_and_a_leading_stop():
    import numpy as np

    from grow_jax.data.samples import Sample
    from grow_jax.train.action_mask import drop_stop_targets

    def sample(ids, tpos):
        k = len(tpos)
        return Sample(input_ids=np.asarray(ids, np.int32), position_ids=None, pixel_values=None,
                      image_grid_thw=None, target_pos=np.asarray(tpos, np.int32),
                      old_logprobs=np.arange(k, dtype=np.float32) - 5,
                      advantages=np.full(k, 0.5, np.float32))

    word_stop = sample([7, 7, 417, 2], [1, 2])  # prompt, word, <|im_end|>
    lead_stop = sample([7, 7, 2, 2], [1, 2])  # empty action: the first target is the stop
    two_words = sample([7, 7, 417, 419], [1, 2])
    out = drop_stop_targets([word_stop, lead_stop, two_words], (2,))
    assert out[0].target_pos.tolist() == [1] and out[0].old_logprobs.tolist() == [-5.0]
    assert out[1].target_pos.tolist() == [1]
    assert out[2].target_pos.tolist() == [1, 2] and out[2].advantages.tolist() == [0.5, 0.5]
