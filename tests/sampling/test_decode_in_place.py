"""The decode loop updates the KV cache in place: in the compiled while body every
cache-sized buffer is produced by a dynamic-update-slice (one new slot written), never by a
copy or transpose of the whole cache (the old [B, L, K, hd] layout cost two such copies per
layer and step). Checked on the compiled HLO, so it holds whatever the machine's load."""

from __future__ import annotations

import re

import jax
import numpy as np
from flax import nnx
from models._tiny import tiny

from grow_jax.models.qwen2_vl.modeling import Qwen2VL
from grow_jax.sampling.generate import Sampler, SamplingParams

_OP = re.compile(r"= f32\[([\d,]+)\]\{[\d,]*\} ([\w-]+)\(")
_CALLS = re.compile(r"calls=(%[\w.-]+)")
_VIEWS = {"get-tuple-element", "bitcast", "parameter", "tuple"}  # alias, copy nothing


def _computations(hlo: str) -> dict:
    comps, cur = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?(%\S+) .*\{$", line)
        if m:
            cur = comps.setdefault(m.group(1), [])
        elif line == "}":
            cur = None
        elif cur is not None:
            cur.append(line)
    return comps


def cache_sized_ops(hlo: str, size: int) -> list:
    """(op, its fused root is a dynamic-update-slice, line) for each instruction of the
    while body that materialises an f32 buffer of `size` elements."""
    comps = _computations(hlo)
    body = comps[re.search(r"while\(.*?body=(%[^,\s]+)", hlo).group(1)]
    out = []
    for line in body:
        m = _OP.search(line)
        if m and m.group(2) not in _VIEWS and np.prod([int(d) for d in m.group(1).split(",")]) == size:
            called = _CALLS.search(line)
            root = next((ln for ln in comps.get(called and called.group(1), []) if "ROOT" in ln), "")
            out.append((m.group(2), "dynamic-update-slice(" in root, line.strip()[:120]))
    return out


def test_decode_loop_writes_cache_in_place():
    c = tiny("gqa2_untied")
    model = Qwen2VL(c, rngs=nnx.Rngs(0))
    sampler = Sampler(model, SamplingParams(max_new_tokens=8, temperature=0.0))
    params = nnx.state(model, nnx.Param)
    batch, _ = sampler.prepare([np.arange(1, 12, dtype=np.int32)] * 3)
    hlo = sampler._fn.lower(params, sampler.rest, jax.random.key(0), batch).compile().as_text()
    t = c.text
    cache_ops = cache_sized_ops(hlo, 8 * t.num_key_value_heads * (16 + 8) * t.head_dim)
    assert len(cache_ops) == 2 * t.num_hidden_layers, cache_ops  # one write per k and v
    assert all(op == "fusion" and dus for op, dus, _ in cache_ops), cache_ops
