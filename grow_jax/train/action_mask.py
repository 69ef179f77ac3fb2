"""Invalid-action masking for single-token action words (`algo.action_tokens_only`).

The policy's output layer covers the whole vocabulary; a free-text agent can emit any token,
and the env maps an unparsable action to a no-op. Negative advantages on failed episodes
push the sampled action words down, and part of that mass goes to non-action tokens:
invalid actions become frequent and the sampled entropy rises instead of falling
(docs/stability.md). Masking every token but the action words and the stop token, in the
sampler and in the loss alike, removes that leak. Behaviour and recomputed logprobs still
describe the same distribution, as the vision placeholders already are masked in both.
"""

from __future__ import annotations

import numpy as np


def non_action_ids(agent, vocab_size: int, already: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Every token id below `vocab_size` except the agent's action words and stop tokens,
    merged with `already` (sorted, unique)."""
    names = getattr(agent.codec, "action_names", None)
    if names is None:
        raise ValueError("config error: algo.action_tokens_only needs a suite whose actions are "
                         f"single words (babyai, crafter); {type(agent.codec).__name__} is not")
    allowed = {t for a in range(len(names)) for t in agent.encode(a)} | set(agent.stop_ids)
    return tuple(sorted(set(already) | (set(range(vocab_size)) - allowed)))


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
