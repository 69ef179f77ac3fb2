"""Invalid-action masking for single-word action codecs (`algo.action_tokens_only`).

The policy's output layer covers the whole vocabulary; a free-text agent can emit any token,
and the env maps an unparsable action to a no-op. Negative advantages on failed episodes
push the sampled action words down, and part of that mass goes to non-action tokens:
invalid actions become frequent and the sampled entropy rises instead of falling.
Masking the vocabulary down to the action words and the stop token was not enough: a
policy could still put the stop token first or a second word after the first, and one
large update that made that likely broke the turn format for good (docs/stability.md,
the 60-iteration table's seed 3). `action_grammar` therefore constrains each position:
an action word first, then its stop token. The sampler and the loss apply the same
`algo.grammar.TokenGrammar`, so behaviour and recomputed logprobs still describe the same
distribution, as the vision placeholders already are masked in both.
"""

from __future__ import annotations

import numpy as np

from grow_jax.algo.grammar import TokenGrammar
from grow_jax.config_utils import ConfigError


def action_grammar(agent) -> TokenGrammar:
    """The grammar of one decision of `agent`: one of its action words, then a stop token."""
    names = getattr(agent.codec, "action_names", None)
    if names is None:
        raise ConfigError("config error: algo.action_tokens_only needs a suite whose actions "
                          f"are single words (babyai, crafter); {type(agent.codec).__name__} "
                          "is not")
    stop = tuple(agent.stop_ids)
    seqs = []
    for a in range(len(names)):
        ids = [int(t) for t in agent.encode(a)]
        seqs.append(ids if ids[-1] in stop else ids + [stop[0]])
    grammar = TokenGrammar.from_sequences(seqs)
    # The token before a turn's first target must read as "start": never an action token.
    last = int(agent.prompt_ids("x", [], 1)[-1])
    if last in dict(grammar.follow):
        raise ConfigError(f"config error: algo.action_tokens_only: the prompt's last token "
                          f"{last} is also part of an action word, so the grammar cannot "
                          "tell a turn's start from the middle of a word")
    return grammar


def drop_stop_targets(samples, stop_ids) -> list:
    """Samples without the stop token as a trained target after the first action token
    (`algo.train_stop_token=False`).

    The stop token after an action word is format, not a decision, and its probability is
    ~1: a failed episode's negative advantage pushes on it with tiny gradients that Adam
    scales up to full-size steps, until the policy stops closing its turn and every action
    parses as invalid. A stop token sampled *first* (an empty action) stays trained.
    """
    stop = np.asarray(stop_ids)
    for s in samples:
        keep = ~np.isin(s.input_ids[s.target_pos + 1], stop)
        keep[0] = True
        if not keep.all():
            s.target_pos, s.old_logprobs, s.advantages = (
                s.target_pos[keep], s.old_logprobs[keep], s.advantages[keep])
    return samples
