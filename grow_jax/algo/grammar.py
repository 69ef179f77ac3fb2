"""A bigram constraint on the policy's output tokens: which token may follow which.

Invalid-action masking over the vocabulary alone (`algo.action_tokens_only` before this
module) still let a policy put the stop token first or a second action word after the first;
once one update made that likely, every action parsed as invalid and same-seed groups lost
all signal (docs/stability.md). A grammar keyed on the previous token closes that door: at a
turn's start only the first tokens of action words can be drawn, after a word only its
continuations (or the stop token once the word is complete). The sampler and the loss apply
the same mask, so behaviour and recomputed log-probabilities describe one distribution.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenGrammar:
    """`start`: tokens allowed when the previous token is not a key of `follow`;
    `follow`: (token, tokens allowed right after it) pairs. Hashable: part of compile keys."""

    start: tuple[int, ...]
    follow: tuple[tuple[int, tuple[int, ...]], ...]

    @classmethod
    def from_sequences(cls, sequences) -> "TokenGrammar":
        """The grammar of a set of token sequences (each an action word + its stop token).

        Exact when every word is a single token (the shipped tokenizer's BabyAI and Crafter
        words); for multi-token words it is the bigram closure, which can admit a chimera
        of two words sharing a token.
        """
        seqs = [tuple(int(t) for t in s) for s in sequences]
        if not seqs or any(len(s) < 2 for s in seqs):
            raise ValueError("TokenGrammar needs sequences of at least a word and a stop token")
        follow: dict[int, set[int]] = {}
        for s in seqs:
            for a, b in zip(s[:-1], s[1:]):
                follow.setdefault(a, set()).add(b)
        return cls(tuple(sorted({s[0] for s in seqs})),
                   tuple((t, tuple(sorted(n))) for t, n in sorted(follow.items())))

    def tables(self, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        """(state [vocab] int32: 0 = start, i = after follow[i-1]'s token; allowed
        [states, vocab] bool)."""
        state = np.zeros(vocab, np.int32)
        allowed = np.zeros((len(self.follow) + 1, vocab), bool)
        allowed[0, list(self.start)] = True
        for i, (tok, nxt) in enumerate(self.follow, 1):
            state[tok] = i
            allowed[i, list(nxt)] = True
        return state, allowed

    def allowed(self, prev_ids: jax.Array, vocab: int) -> jax.Array:
        """bool [..., vocab]: which next tokens the grammar admits after `prev_ids` [...]."""
        state, allowed = self.tables(vocab)
        return jnp.asarray(allowed)[jnp.asarray(state)[prev_ids.astype(jnp.int32)]]

    def apply(self, logits: jax.Array, prev_ids: jax.Array) -> jax.Array:
        """`logits` [..., V] with every token the grammar forbids after `prev_ids` at -inf."""
        return jnp.where(self.allowed(prev_ids, logits.shape[-1]), logits, -jnp.inf)
