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


def non_action_ids(agent, vocab_size: int, already: tuple[int, ...] = ()) -> tuple[int, ...]:
    """Every token id below `vocab_size` except the agent's action words and stop tokens,
    merged with `already` (sorted, unique)."""
    names = getattr(agent.codec, "action_names", None)
    if names is None:
        raise ValueError("config error: algo.action_tokens_only needs a suite whose actions are "
                         f"single words (babyai, crafter); {type(agent.codec).__name__} is not")
    allowed = {t for a in range(len(names)) for t in agent.encode(a)} | set(agent.stop_ids)
    return tuple(sorted(set(already) | (set(range(vocab_size)) - allowed)))
