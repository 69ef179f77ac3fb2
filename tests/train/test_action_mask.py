"""algo.action_tokens_only: only the action words and the stop token stay sampleable."""

import types

import pytest

from grow_jax.train.action_mask import non_action_ids


def _agent(suite):
    from grow_jax.agent.adapter import make_agent
    from grow_jax.config_utils import base_config
    from grow_jax.train import builders

    c = base_config()
    c.env.suite = suite
    tok = builders.load_tokenizer(c)
    return make_agent(c, tok), builders.model_config(c, tok)


def test_babyai_keeps_the_seven_words_and_im_end():
    agent, mcfg = _agent("babyai")
    vocab = mcfg.text.vocab_size
    masked = non_action_ids(agent, vocab, (mcfg.image_token_id,))
    kept = set(range(vocab)) - set(masked)
    words = {agent.encode(a)[0] for a in range(len(agent.codec.action_names))}
    assert kept == words | set(agent.stop_ids)
    assert len(words) == 7 and mcfg.image_token_id in masked
    assert list(masked) == sorted(set(masked))


def test_multi_token_codec_is_refused():
    agent = types.SimpleNamespace(codec=object(), stop_ids=(2,))
    with pytest.raises(ValueError, match="algo.action_tokens_only"):
        non_action_ids(agent, 10)
