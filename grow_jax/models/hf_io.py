"""Hugging Face Qwen2-VL folders <-> grow_jax models, one tensor at a time.

- `load_pretrained(hf_dir, mesh=...)`: config.json + `model.safetensors` (or a sharded
  `model.safetensors.index.json`), legacy (`visual.*`, `model.*`) or current
  (`model.visual.*`, `model.language_model.*`) key names. Every problem with the folder
  (missing / unexpected / mis-shaped tensors) is collected and reported in one error before
  anything is allocated; the model is built abstractly and each tensor is read, converted
  and `jax.device_put` straight onto its (sharded) destination, so the host never holds a
  second copy of the whole model.
- `save_pretrained(model_or_params, out_dir, config=...)`: a folder that transformers loads
  (`Qwen2VLForConditionalGeneration.from_pretrained`, `AutoProcessor.from_pretrained`),
  written to a temporary folder first and renamed at the end. Torch is never imported.

The per-tensor key table and layouts live in `grow_jax.models.qwen2_vl.params`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from grow_jax.models.qwen2_vl import params as qparams
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL

ARCHITECTURE = "Qwen2VLForConditionalGeneration"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
DEFAULT_TOKENIZER_DIR = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "assets", "tokenizer"
)
# Qwen2-VL image processor defaults (preprocessor_config.json of Qwen2-VL-7B-Instruct).
MIN_PIXELS, MAX_PIXELS = 56 * 56, 28 * 28 * 16384
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Buffers some older torch exports carry; they are recomputed, never loaded.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)
# Non-weight files of a HF folder worth keeping for a later export (tokenizer + image processor).
ASSET_FILES = _TOKENIZER_FILES + ("preprocessor_config.json",)


# ----------------------------------------------------------------------------- config
def read_config(hf_dir: str | os.PathLike) -> Qwen2VLConfig:
    """Qwen2VLConfig from ``hf_dir/config.json``; other architectures are a clear error."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not a Hugging Face model folder")
    with open(path) as f:
        raw = json.load(f)
    archs = raw.get("architectures") or [ARCHITECTURE]
    model_type = raw.get("model_type")
    if ARCHITECTURE not in archs or model_type not in (None, "qwen2_vl"):
        raise ValueError(
            f"{path}: unsupported model (architectures={archs}, model_type={model_type!r}); "
            f"grow_jax loads only {ARCHITECTURE} (model_type 'qwen2_vl')"
        )
    return Qwen2VLConfig.from_hf(raw)


def model_config_to_json(config: Qwen2VLConfig) -> dict[str, Any]:
    """Model config as stored in checkpoint metadata (``extra["model_config"]``): the HF
    config.json dict, whose ``dtype`` is the parameter dtype."""
    return config.to_hf()


def model_config_from_json(data: Mapping[str, Any]) -> Qwen2VLConfig:
    """Inverse of `model_config_to_json` (compute dtype: float32; callers may replace it)."""
    return Qwen2VLConfig.from_hf(dict(data)).replace(param_dtype=data.get("dtype", "float32"))


# ----------------------------------------------------------------------------- reading
def _weight_files(hf_dir: str) -> dict[str, str]:
    """HF key -> safetensors file path, from the index or the single file."""
    index = os.path.join(hf_dir, INDEX_FILE)
    single = os.path.join(hf_dir, SINGLE_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no 'weight_map' entries")
        for name in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(hf_dir, name)):
                raise FileNotFoundError(
                    f"{index} names shard {name!r}, which is missing from {hf_dir}"
                )
        return {k: os.path.join(hf_dir, v) for k, v in weight_map.items()}
    if os.path.isfile(single):
        with safe_open(single, framework="numpy") as f:
            return {k: single for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    raise FileNotFoundError(f"{hf_dir}: neither {SINGLE_FILE} nor {INDEX_FILE} found")


def _scan(hf_dir: str, config: Qwen2VLConfig) -> dict[str, tuple[str, str]]:
    """Canonical key -> (file, key in file), after checking names and shapes of every tensor."""
    files = _weight_files(hf_dir)
    expected = qparams.expected_hf_shapes(config)
    by_file: dict[str, list[str]] = {}
    for key, path in files.items():
        by_file.setdefault(path, []).append(key)
    found: dict[str, tuple[str, str]] = {}
    errors: list[str] = []
    for path, keys in sorted(by_file.items()):
        with safe_open(path, framework="numpy") as f:
            present = set(f.keys())
            for key in sorted(keys):
                if key.endswith(_IGNORED_SUFFIXES):
                    continue
                if key not in present:
                    errors.append(
                        f"index lists {key!r} in {os.path.basename(path)}, "
                        "which does not contain it"
                    )
                    continue
                canon = qparams.canonical_hf_key(key)
                if canon == "lm_head.weight" and config.text.tie_word_embeddings:
                    continue  # duplicate of the tied embedding
                if canon in found:
                    errors.append(
                        f"tensor {canon!r} given twice (as {found[canon][1]!r} and {key!r})"
                    )
                    continue
                if canon not in expected:
                    errors.append(f"unexpected tensor {key!r}")
                    continue
                shape = tuple(f.get_slice(key).get_shape())
                if shape != expected[canon]:
                    errors.append(
                        f"tensor {key!r} has shape {shape}, config.json implies {expected[canon]}"
                    )
                found[canon] = (path, key)
    errors += [
        f"missing tensor {k!r} (shape {expected[k]})" for k in sorted(set(expected) - set(found))
    ]
    if errors:
        raise ValueError(
            f"{hf_dir}: {len(errors)} problem(s) with the weights:\n  " + "\n  ".join(errors)
        )
    return found


def _iter_tensors(found: Mapping[str, tuple[str, str]]) -> Iterator[tuple[str, np.ndarray]]:
    """(canonical key, numpy array) one at a time, opening each file once."""
    by_file: dict[str, list[tuple[str, str]]] = {}
    for canon, (path, key) in found.items():
        by_file.setdefault(path, []).append((canon, key))
    for path, entries in sorted(by_file.items()):
        with safe_open(path, framework="numpy") as f:  # bf16 arrives as ml_dtypes.bfloat16
            for canon, key in entries:
                yield canon, f.get_tensor(key)


def _param_shardings(abstract_params: nnx.State, mesh, rules) -> dict[tuple, Any]:
    """Flat path -> sharding of every parameter (one device when there is no mesh)."""
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return {path: device for path, _ in nnx.to_flat_state(abstract_params)}
    from grow_jax import sharding as gsharding

    shardings = gsharding.state_shardings(abstract_params, mesh, rules)
    return {
        path: s.get_value() if isinstance(s, nnx.Variable) else s
        for path, s in nnx.to_flat_state(shardings)
    }


def load_pretrained(
    hf_dir: str | os.PathLike,
    *,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
    dtype: str | None = None,
    param_dtype: str | None = None,
) -> Qwen2VL:
    """A `Qwen2VL` with the weights of a local HF Qwen2-VL folder.

    Args:
      hf_dir: folder with config.json and model.safetensors / model.safetensors.index.json.
      mesh: place parameters sharded over this mesh (`grow_jax.sharding` rules); default:
        the first local device.
      rules: `grow_jax.sharding.AxisRules` for the mesh (None: its defaults).
      dtype / param_dtype: override the compute / storage dtype (default float32 both).
    """
    hf_dir = os.fspath(hf_dir)
    config = read_config(hf_dir)
    config = config.replace(
        **{k: v for k, v in (("dtype", dtype), ("param_dtype", param_dtype)) if v is not None}
    )
    found = _scan(hf_dir, config)

    abstract = nnx.eval_shape(lambda: Qwen2VL(config, rngs=nnx.Rngs(0)))
    graphdef, abs_params, abs_rest = nnx.split(abstract, nnx.Param, ...)
    shardings = _param_shardings(abs_params, mesh, rules)
    target = jax.numpy.dtype(config.param_dtype)
    values: dict[tuple, jax.Array] = {}
    for canon, array in _iter_tensors(found):
        converted = qparams.hf_to_nnx(canon, array, config)
        if converted is None:
            continue
        path, host = converted
        if path not in shardings:
            raise KeyError(f"{hf_dir}: tensor {canon!r} maps to {path}, which Qwen2VL lacks")
        values[path] = jax.device_put(np.ascontiguousarray(host, dtype=target), shardings[path])
        del array, host
    params = nnx.from_flat_state(
        [
            (path, var.replace(values[path]))  # keeps axis metadata
            for path, var in nnx.to_flat_state(abs_params)
        ]
    )
    rest = abs_rest
    if nnx.to_flat_state(abs_rest):  # non-parameter state (buffers): initialize only those
        rest = jax.jit(lambda: nnx.state(Qwen2VL(config, rngs=nnx.Rngs(0)), nnx.Not(nnx.Param)))()
    return nnx.merge(graphdef, params, rest)


# ----------------------------------------------------------------------------- writing
def _flat_params(model_or_params: Any) -> list[tuple[tuple, Any]]:
    """(path, array) of every parameter of a model, an nnx.State, or a nested pure dict."""
    if isinstance(model_or_params, nnx.Module):
        model_or_params = nnx.state(model_or_params, nnx.Param)
    if isinstance(model_or_params, nnx.State):
        model_or_params = nnx.to_pure_dict(model_or_params)
    out: list[tuple[tuple, Any]] = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, prefix + (key,))
            else:
                out.append((prefix + (key,), value))

    walk(model_or_params, ())
    return out


def _to_host(array: Any) -> np.ndarray:
    """Gathers one (possibly sharded, possibly multi-host) array to host numpy."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(jax.device_get(array))


def _plan_shards(sizes: list[int], max_shard_bytes: int) -> list[list[int]]:
    """Greedy consecutive grouping of tensor indices into shards of <= max_shard_bytes."""
    shards: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += size
    return shards


def _write_weights(
    flat: list[tuple[tuple, Any]],
    out: str,
    config: Qwen2VLConfig,
    max_shard_bytes: int,
    write: bool,
) -> None:
    dtype = jax.numpy.dtype(config.param_dtype)
    sizes = [int(np.prod(np.shape(a))) * dtype.itemsize for _, a in flat]
    shards = _plan_shards(sizes, max_shard_bytes)
    weight_map: dict[str, str] = {}
    for n, members in enumerate(shards, start=1):
        name = (
            SINGLE_FILE if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        )
        tensors = {}
        for i in members:
            path, array = flat[i]
            key, host = qparams.nnx_to_hf(path, _to_host(array), config)
            if key in tensors or key in weight_map:
                raise ValueError(f"two parameters map to HF tensor {key!r}")
            tensors[key] = np.ascontiguousarray(host, dtype=dtype)
            weight_map[key] = name
        if write:
            save_file(tensors, os.path.join(out, name), metadata={"format": "pt"})
        del tensors
    if write and len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(sizes)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        _write_json(os.path.join(out, INDEX_FILE), index)


def _write_json(path: str, data: Mapping[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def has_tokenizer(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds tokenizer files (tokenizer.json or vocab.json)."""
    return any(os.path.isfile(os.path.join(folder, n)) for n in ("tokenizer.json", "vocab.json"))


def _copy_tokenizer(src: str, out: str) -> dict[str, Any]:
    """Copies the tokenizer files of ``src``; returns its tokenizer_config (or {})."""
    copied = [n for n in _TOKENIZER_FILES if os.path.isfile(os.path.join(src, n))]
    if "tokenizer.json" not in copied and "vocab.json" not in copied:
        raise FileNotFoundError(f"tokenizer folder {src} has no tokenizer.json or vocab.json")
    for name in copied:
        shutil.copy2(os.path.join(src, name), os.path.join(out, name))
    tok_config: dict[str, Any] = {}
    if "tokenizer_config.json" in copied:
        with open(os.path.join(src, "tokenizer_config.json")) as f:
            tok_config = json.load(f)
    template = tok_config.get("chat_template")
    if isinstance(template, str) and not {"chat_template.jinja", "chat_template.json"} & set(
        copied
    ):
        with open(os.path.join(out, "chat_template.jinja"), "w") as f:
            f.write(template)
    return tok_config


def _token_id(out: str, token: Any) -> int | None:
    """Id of a special token string according to the copied tokenizer.json."""
    if isinstance(token, dict):
        token = token.get("content")
    path = os.path.join(out, "tokenizer.json")
    if not isinstance(token, str) or not os.path.isfile(path):
        return None
    with open(path) as f:
        tok = json.load(f)
    for added in tok.get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    vocab = (tok.get("model") or {}).get("vocab") or {}
    return vocab.get(token) if isinstance(vocab, dict) else None


def _preprocessor_config(config: Qwen2VLConfig, tokenizer_dir: str) -> dict[str, Any]:
    """Qwen2VLImageProcessor settings; min/max pixels kept from the source folder if it has them."""
    min_pixels, max_pixels = MIN_PIXELS, MAX_PIXELS
    src = os.path.join(tokenizer_dir, "preprocessor_config.json")
    if os.path.isfile(src):
        with open(src) as f:
            old = json.load(f)
        size = old.get("size") or {}
        min_pixels = int(old.get("min_pixels") or size.get("shortest_edge") or min_pixels)
        max_pixels = int(old.get("max_pixels") or size.get("longest_edge") or max_pixels)
    v = config.vision
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "patch_size": v.patch_size,
        "merge_size": v.spatial_merge_size,
        "temporal_patch_size": v.temporal_patch_size,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": _CLIP_MEAN,
        "image_std": _CLIP_STD,
        "resample": 3,  # bicubic
    }


def _generation_config(out: str, tok_config: Mapping[str, Any]) -> dict[str, Any]:
    gen: dict[str, Any] = {"do_sample": False}
    for field in ("bos_token", "eos_token", "pad_token"):
        token_id = _token_id(out, tok_config.get(field))
        if token_id is not None:
            gen[f"{field}_id"] = token_id
    return gen


def save_pretrained(
    model_or_params: Any,
    out_dir: str | os.PathLike,
    *,
    config: Qwen2VLConfig,
    tokenizer_dir: str | os.PathLike | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
    with_tokenizer: bool = True,
) -> str:
    """Writes a transformers-loadable Qwen2-VL folder; returns its path.

    Args:
      model_or_params: a `Qwen2VL`, its `nnx.state(model, nnx.Param)`, or the pure dict of it
        (sharded arrays are gathered one tensor at a time).
      out_dir: destination; must be missing or empty unless ``overwrite``.
      config: the model config (config.json; tensors are stored in ``config.param_dtype``).
      tokenizer_dir: tokenizer files to ship (and a preprocessor_config.json whose min/max
        pixels are kept); default: grow_jax's bundled tokenizer.
      max_shard_bytes: above this total, weights are split into
        ``model-0000i-of-0000n.safetensors`` files plus ``model.safetensors.index.json``.
      with_tokenizer: False writes weights and configs only (a weights-only source folder);
        tokenizer_dir is then read for its preprocessor_config.json alone.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    tokenizer_dir = os.fspath(tokenizer_dir) if tokenizer_dir is not None else DEFAULT_TOKENIZER_DIR
    if (
        os.path.exists(out_dir)
        and (not os.path.isdir(out_dir) or os.listdir(out_dir))
        and not overwrite
    ):
        raise FileExistsError(
            f"{out_dir} exists and is not empty; pass overwrite=True to replace it"
        )
    flat = _flat_params(model_or_params)
    write = jax.process_index() == 0
    if not write:  # other hosts only take part in the gathers
        _write_weights(flat, "", config, max_shard_bytes, write=False)
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        _write_weights(flat, tmp, config, max_shard_bytes, write=True)
        _write_json(os.path.join(tmp, "config.json"), config.to_hf())
        tok_config = _copy_tokenizer(tokenizer_dir, tmp) if with_tokenizer else {}
        _write_json(
            os.path.join(tmp, "preprocessor_config.json"),
            _preprocessor_config(config, tokenizer_dir),
        )
        _write_json(
            os.path.join(tmp, "generation_config.json"), _generation_config(tmp, tok_config)
        )
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rename(out_dir, os.path.join(old, "x"))
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
