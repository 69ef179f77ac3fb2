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
