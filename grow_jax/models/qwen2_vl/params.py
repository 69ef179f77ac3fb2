"""HF <-> NNX parameter mapping for Qwen2-VL: one per-tensor key table for both directions.

Per tensor (streaming-friendly, for loaders that read one safetensors entry at a time):
- `canonical_hf_key(key)`: legacy hub names (`visual.*`, `model.layers.*`, ...) ->
  transformers 5.x in-memory names (`model.visual.*`, `model.language_model.*`).
- `hf_to_nnx(key, array, config) -> (nnx_path, array)`; None for `lm_head.weight` of a tied
  model (a duplicate of the embedding, to be skipped).
- `nnx_to_hf(nnx_path, array, config) -> (hf_key, array)`.
- `expected_hf_shapes(config) -> {hf_key: shape}` (no lm_head when tied).
Whole state:
- `state_from_hf(tensors, config) -> nested pure dict` for `nnx.replace_by_pure_dict`,
  collecting every missing / unexpected / mis-shaped tensor before raising one error.
- `state_to_hf(pure_dict, config) -> {hf_key: array}`.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig


class Transform(enum.Enum):
    NONE = "none"  # same layout
    LINEAR = "linear"  # torch [out, in] <-> nnx kernel [in, out]
    CONV3D = "conv3d"  # torch [out, C, tp, ps, ps] <-> nnx kernel [C*tp*ps*ps, out]


_V = "model.visual."
_L = "model.language_model."
# (hf template, nnx template, transform). `{i}` is a layer index; `{name:a|b}` one of a set.
_TABLE: tuple[tuple[str, str, Transform], ...] = (
    (_V + "patch_embed.proj.weight", "visual.patch_embed.kernel", Transform.CONV3D),
    (_V + "blocks.{i}.{n:norm1|norm2}.weight", "visual.blocks.{i}.{n}.scale", Transform.NONE),
    (_V + "blocks.{i}.{n:norm1|norm2}.bias", "visual.blocks.{i}.{n}.bias", Transform.NONE),
    (
        _V + "blocks.{i}.{m:attn.qkv|attn.proj|mlp.fc1|mlp.fc2}.weight",
        "visual.blocks.{i}.{m}.kernel",
        Transform.LINEAR,
    ),
    (
        _V + "blocks.{i}.{m:attn.qkv|attn.proj|mlp.fc1|mlp.fc2}.bias",
        "visual.blocks.{i}.{m}.bias",
        Transform.NONE,
    ),
    (_V + "merger.ln_q.weight", "visual.merger.ln_q.scale", Transform.NONE),
    (_V + "merger.ln_q.bias", "visual.merger.ln_q.bias", Transform.NONE),
    (_V + "merger.mlp.{k:0|2}.weight", "visual.merger.mlp{k}.kernel", Transform.LINEAR),
    (_V + "merger.mlp.{k:0|2}.bias", "visual.merger.mlp{k}.bias", Transform.NONE),
    (_L + "embed_tokens.weight", "embed_tokens.embedding", Transform.NONE),
    (
        _L + "layers.{i}.self_attn.{p:q_proj|k_proj|v_proj|o_proj}.weight",
        "layers.{i}.self_attn.{p}.kernel",
        Transform.LINEAR,
    ),
    (
        _L + "layers.{i}.self_attn.{p:q_proj|k_proj|v_proj}.bias",
        "layers.{i}.self_attn.{p}.bias",
        Transform.NONE,
    ),
    (
        _L + "layers.{i}.mlp.{p:gate_proj|up_proj|down_proj}.weight",
        "layers.{i}.mlp.{p}.kernel",
        Transform.LINEAR,
    ),
    (
        _L + "layers.{i}.{n:input_layernorm|post_attention_layernorm}.weight",
        "layers.{i}.{n}.scale",
        Transform.NONE,
    ),
    (_L + "norm.weight", "norm.scale", Transform.NONE),
    ("lm_head.weight", "lm_head.kernel", Transform.LINEAR),
)

_PLACEHOLDER = re.compile(r"\{(\w+)(?::([^}]*))?\}")


def _compile(template: str, choices: Mapping[str, str]) -> re.Pattern:
    """Template -> anchored regex; `{name}` takes the choice set `choices[name]` (digits if none)."""
    out, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        alt = choices.get(name)
        alt = r"\d+" if alt is None else "|".join(re.escape(c) for c in alt.split("|"))
        out.append(f"(?P<{name}>{alt})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


def _fill(template: str, groups: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: groups[m.group(1)], template)


def _rule(hf: str, nnx_t: str, tf: Transform):
    choices = {m.group(1): m.group(2) for m in _PLACEHOLDER.finditer(hf) if m.group(2)}
    return _compile(hf, choices), _compile(nnx_t, choices), hf, nnx_t, tf


_RULES = tuple(_rule(*row) for row in _TABLE)


def _match_one(key: str, side: int) -> tuple[re.Match, tuple]:
    hits = [(m, r) for r in _RULES if (m := r[side].match(key))]
    if len(hits) != 1:
        what = "HF key" if side == 0 else "NNX path"
        if not hits:
            raise KeyError(f"unknown {what} {key!r}: no rule in the Qwen2-VL key table matches it")
        raise KeyError(f"{what} {key!r} matches {len(hits)} rules in the key table")
    return hits[0]


def canonical_hf_key(key: str) -> str:
    """Legacy hub names -> transformers 5.x names; canonical names are returned unchanged."""
    if key.startswith("visual."):
        return "model." + key
    for part in ("layers.", "embed_tokens.", "norm."):
        if key.startswith("model." + part):
            return _L + key[len("model.") :]
    return key


@functools.lru_cache(maxsize=16)
def _expected(config: Qwen2VLConfig) -> dict[str, tuple[int, ...]]:
    t, v = config.text, config.vision
    d, hd = t.hidden_size, t.head_dim
    nq, nkv = t.num_attention_heads * hd, t.num_key_value_heads * hd
    e, ps, tp = v.embed_dim, v.patch_size, v.temporal_patch_size
    shapes = {_V + "patch_embed.proj.weight": (e, v.in_chans, tp, ps, ps)}
    for i in range(v.depth):
        b = f"{_V}blocks.{i}."
        for n in ("norm1", "norm2"):
            shapes[b + n + ".weight"] = shapes[b + n + ".bias"] = (e,)
        for name, (o, n_in) in {
            "attn.qkv": (3 * e, e),
            "attn.proj": (e, e),
            "mlp.fc1": (v.mlp_dim, e),
            "mlp.fc2": (e, v.mlp_dim),
        }.items():
            shapes[b + name + ".weight"] = (o, n_in)
            shapes[b + name + ".bias"] = (o,)
    shapes[_V + "merger.ln_q.weight"] = shapes[_V + "merger.ln_q.bias"] = (e,)
    shapes[_V + "merger.mlp.0.weight"] = (v.merge_dim, v.merge_dim)
    shapes[_V + "merger.mlp.0.bias"] = (v.merge_dim,)
    shapes[_V + "merger.mlp.2.weight"] = (v.hidden_size, v.merge_dim)
    shapes[_V + "merger.mlp.2.bias"] = (v.hidden_size,)
    shapes[_L + "embed_tokens.weight"] = (t.vocab_size, d)
    for i in range(t.num_hidden_layers):
        b = f"{_L}layers.{i}."
        for p, o in (("q_proj", nq), ("k_proj", nkv), ("v_proj", nkv)):
            shapes[b + f"self_attn.{p}.weight"] = (o, d)
            shapes[b + f"self_attn.{p}.bias"] = (o,)
        shapes[b + "self_attn.o_proj.weight"] = (d, nq)
        shapes[b + "mlp.gate_proj.weight"] = shapes[b + "mlp.up_proj.weight"] = (
            t.intermediate_size,
            d,
        )
        shapes[b + "mlp.down_proj.weight"] = (d, t.intermediate_size)
        shapes[b + "input_layernorm.weight"] = shapes[b + "post_attention_layernorm.weight"] = (d,)
    shapes[_L + "norm.weight"] = (d,)
    if not t.tie_word_embeddings:
        shapes["lm_head.weight"] = (t.vocab_size, d)
    return shapes


def expected_hf_shapes(config: Qwen2VLConfig) -> dict[str, tuple[int, ...]]:
    """Every HF tensor (canonical name) this config needs, with its torch shape."""
    return dict(_expected(config))


def _path_str(path) -> str:
    return ".".join(str(p) for p in path)


def _path_tuple(s: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in s.split("."))


def _check_shape(key: str, got, config: Qwen2VLConfig) -> tuple[int, ...]:
    expected = _expected(config).get(key)
    if expected is None:
        raise KeyError(f"HF tensor {key!r} is not part of this config (layer index out of range?)")
    if tuple(got) != expected:
        raise ValueError(f"HF tensor {key!r}: expected shape {expected}, got {tuple(got)}")
    return expected


def hf_to_nnx(key: str, array: Any, config: Qwen2VLConfig) -> tuple[tuple, np.ndarray] | None:
    """One HF tensor -> (nnx path tuple, array in NNX layout); None for a tied lm_head."""
    key = canonical_hf_key(key)
    m, (_, _, _, nnx_t, tf) = _match_one(key, 0)
    if key == "lm_head.weight" and config.text.tie_word_embeddings:
        return None
    array = np.asarray(array)
    _check_shape(key, array.shape, config)
    if tf is Transform.LINEAR:
        array = array.T
    elif tf is Transform.CONV3D:
        array = array.reshape(array.shape[0], -1).T
    return _path_tuple(_fill(nnx_t, m.groupdict())), array


def nnx_to_hf(nnx_path, array: Any, config: Qwen2VLConfig) -> tuple[str, np.ndarray]:
    """One NNX parameter (path tuple or dotted string) -> (HF key, array in torch layout)."""
    path = nnx_path if isinstance(nnx_path, str) else _path_str(nnx_path)
    m, (_, _, hf_t, _, tf) = _match_one(path, 1)
    key = _fill(hf_t, m.groupdict())
    array = np.asarray(array)
    if tf is Transform.LINEAR:
        array = array.T
    elif tf is Transform.CONV3D:
        expected = _expected(config).get(key)
        if expected is None or array.shape != (int(np.prod(expected[1:])), expected[0]):
            raise ValueError(
                f"NNX param {path!r}: shape {array.shape} does not fit {key!r} of shape {expected}"
            )
        array = array.T.reshape(expected)
    _check_shape(key, array.shape, config)
    return key, array


def state_from_hf(tensors: Mapping[str, Any], config: Qwen2VLConfig) -> dict:
    """All HF tensors -> nested pure dict (int keys for layer lists) in `config.param_dtype`.

    Raises one ValueError listing every unknown, duplicated, mis-shaped and missing tensor.
    """
    import jax.numpy as jnp  # dtype names incl. bfloat16

    dtype = jnp.dtype(config.param_dtype)
    errors: list[str] = []
    seen: dict[str, str] = {}
    out: dict = {}
    for key, array in tensors.items():
        canon = canonical_hf_key(key)
        if canon in seen:
            errors.append(f"duplicate tensor {canon!r} (given as {seen[canon]!r} and {key!r})")
            continue
        seen[canon] = key
        try:
            res = hf_to_nnx(canon, array, config)
        except (KeyError, ValueError) as e:
            errors.append(str(e.args[0]) if e.args else repr(e))
            continue
        if res is None:
            continue
        path, value = res
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = np.asarray(value).astype(dtype, copy=False)
    missing = sorted(set(_expected(config)) - set(seen))
    errors += [f"missing tensor {k!r} (shape {_expected(config)[k]})" for k in missing]
    if errors:
        raise ValueError(
            f"{len(errors)} problem(s) loading Qwen2-VL weights:\n  " + "\n  ".join(errors)
        )
    return out


def _flatten(tree: Mapping, prefix=()) -> list[tuple[tuple, Any]]:
    items = []
    for k, v in tree.items():
        if isinstance(v, Mapping):
            items += _flatten(v, prefix + (k,))
        else:
            items.append((prefix + (k,), v))
    return items


def state_to_hf(pure_dict: Mapping, config: Qwen2VLConfig) -> dict[str, np.ndarray]:
    """Nested pure dict (`nnx.to_pure_dict(nnx.state(model, nnx.Param))`) -> HF tensors."""
    return dict(nnx_to_hf(path, np.asarray(v), config) for path, v in _flatten(pure_dict))
