"""Batched generation with a fixed-size KV cache, as pure jitted functions.

`Sampler` is the rollout hot path: it left-pads prompts into a few bucketed shapes,
runs one jitted prefill + `lax.while_loop` decode (stopping once every row emitted a
stop token) and returns new tokens with their log-probabilities. `generate` is the
transformers-like convenience API on top.

Log-probabilities are those of the distribution tokens are drawn from: log_softmax of
`losses.policy_logits` (temperature, then top-k/top-p), or log_softmax(logits) when
greedy. The train step recomputes them with the same function (`LossConfig` carries the
sampling settings), so the first update's importance ratio is exactly 1.

`Sampler(..., dtype="bfloat16")` decodes with bf16 weights, activations and KV cache while
the learner keeps f32 master weights: decode reads half the bytes. Its log-probabilities
then differ from the learner's (docs/performance.md states by how much), so RL with it
re-scores them in the learner (`algo.recompute_old_logprobs`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grow_jax.algo import losses
from grow_jax.data.samples import ImageSlots, pack_images, round_up
from grow_jax.models.qwen2_vl import inputs as qinputs
from grow_jax.models.qwen2_vl.layers import dtype_of
from grow_jax.models.qwen2_vl.modeling import Qwen2VL, init_cache


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Static decoding settings (part of the compile key)."""

    max_new_tokens: int = 16
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    stop_token_ids: tuple[int, ...] = ()
    suppress_token_ids: tuple[int, ...] = ()  # never sampled (vision placeholders)
    grammar: object = None  # algo.grammar.TokenGrammar: allowed tokens after the previous one

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


def _choose(logits: jax.Array, prev: jax.Array, keys: jax.Array, sp: SamplingParams):
    """Picks one token per row after the tokens `prev` [B], with that row's key (keys [B]);
    returns (token, its log-probability)."""
    logits = losses.constrain_logits(logits, sp.suppress_token_ids, sp.grammar, prev)
    if sp.temperature == 0:
        tok = jnp.argmax(logits, axis=-1)
        return tok, jnp.take_along_axis(jax.nn.log_softmax(logits), tok[:, None], 1)[:, 0]
    filt = losses.policy_logits(logits, temperature=sp.temperature, top_k=sp.top_k,
                                top_p=sp.top_p)
    tok = jax.vmap(jax.random.categorical)(keys, filt)
    logp = jax.nn.log_softmax(filt)
    return tok, jnp.take_along_axis(logp, tok[:, None], 1)[:, 0]


def _generate(params, rest, rng, batch, *, graphdef, config, sp: SamplingParams):
    """Prefill + decode. batch: input_ids/attention_mask [B,Tp], position_ids [3,B,Tp],
    pixel_values [P,D], vision_pos_ids [P,2], vision_segment_ids [P], row_valid [B],
    row_ids [B]. Token i of a row is drawn with fold_in(fold_in(rng, row_id), i): a row's
    tokens depend on its id, not on its place in the batch or on the other rows. Float
    weights are cast to `config.param_dtype` (the decode dtype; a no-op when equal)."""
    params, rest = _cast(params, config.param_dtype), _cast(rest, config.param_dtype)
    model = nnx.merge(graphdef, params, rest)
    ids, pmask = batch["input_ids"], batch["attention_mask"]
    b, tp = ids.shape
    total = tp + sp.max_new_tokens
    cache = init_cache(config, b, total, config.dtype)
    mask = jnp.concatenate([pmask, jnp.zeros((b, sp.max_new_tokens), pmask.dtype)], axis=1)
    image_embeds = None
    if batch["pixel_values"].shape[0]:
        image_embeds = model.encode_images(
            batch["pixel_values"], batch["vision_pos_ids"], batch["vision_segment_ids"]
        )
    last = jnp.full((b, 1), tp - 1, jnp.int32)
    logits, cache = model.forward(
        ids,
        batch["position_ids"],
        mask,
        image_embeds=image_embeds,
        cache=cache,
        cache_pos=jnp.int32(0),
        logits_at=last,
    )
    next_pos = jnp.max(batch["position_ids"], axis=(0, 2)) + 1  # [B]
    stops = jnp.asarray(sp.stop_token_ids or (-1,), jnp.int32)

    row_keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, batch["row_ids"])
    step_keys = jax.vmap(jax.random.fold_in, (0, None))
    # left-padded: the last column is each prompt's last token
    tok, lp = _choose(logits[:, -1].astype(jnp.float32), ids[:, -1], step_keys(row_keys, 0), sp)
    tokens = jnp.zeros((b, sp.max_new_tokens), jnp.int32).at[:, 0].set(tok)
    logps = jnp.zeros((b, sp.max_new_tokens), jnp.float32).at[:, 0].set(lp)
    done = jnp.isin(tok, stops) | ~batch["row_valid"]  # padding rows never hold the loop
    lengths = jnp.ones((b,), jnp.int32)

    def cond(c):
        i, _, _, _, _, _, done = c
        return (i < sp.max_new_tokens) & ~jnp.all(done)

    def body(c):
        i, cache, mask, tokens, logps, lengths, done = c
        mask = mask.at[:, tp + i - 1].set(1)
        pos = jnp.broadcast_to((next_pos + i - 1)[None, :, None], (3, b, 1)).astype(jnp.int32)
        prev = jax.lax.dynamic_slice_in_dim(tokens, i - 1, 1, axis=1)
        logits, cache = model.forward(
            prev, pos, mask, cache=cache, cache_pos=(tp + i - 1).astype(jnp.int32)
        )
        tok, lp = _choose(logits[:, -1].astype(jnp.float32), prev[:, 0], step_keys(row_keys, i),
                          sp)
        tok = jnp.where(done, 0, tok)
        lp = jnp.where(done, 0.0, lp)
        tokens = tokens.at[:, i].set(tok)
        logps = logps.at[:, i].set(lp)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | jnp.isin(tok, stops)
        return i + 1, cache, mask, tokens, logps, lengths, done

    init = (jnp.int32(1), cache, mask, tokens, logps, lengths, done)
    _, _, _, tokens, logps, lengths, _ = jax.lax.while_loop(cond, body, init)
    return tokens, logps, lengths


def _cast(tree, dtype: str):
    """Floating leaves of `tree` in `dtype` (others untouched)."""
    dt = dtype_of(dtype)
    return jax.tree.map(
        lambda x: x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def decode_graph(model, dtype: str | None):
    """(graphdef, config) that compute in `dtype` (None: the model's own compute dtype);
    the graph takes the model's params, cast inside the jitted decode."""
    config = model.config
    if dtype is None or (dtype == config.dtype and dtype == config.param_dtype):
        return nnx.split(model, nnx.Param, ...)[0], config
    config = dataclasses.replace(config, dtype=dtype, param_dtype=dtype)
    return nnx.split(nnx.eval_shape(lambda: Qwen2VL(config, rngs=nnx.Rngs(0))),
                     nnx.Param, ...)[0], config


@functools.lru_cache(maxsize=64)
def _jitted_generate(graphdef, config, sp: SamplingParams):
    """One jitted program per (graph, config, settings), shared by every Sampler built for
    them (the trainer builds samplers repeatedly; each would otherwise recompile)."""
    return jax.jit(functools.partial(_generate, graphdef=graphdef, config=config, sp=sp))


BATCH_BUCKET = 8  # rows (and image slots) per batch are a multiple of this


class Sampler:
    """Jitted batched sampling for one model graph; recompiles only per bucketed shape."""

    def __init__(
        self,
        model,
        sp: SamplingParams,
        *,
        mesh=None,
        prompt_bucket: int = 16,
        batch_bucket: int = BATCH_BUCKET,
        patch_bucket: int = 256,
        pad_id: int = 0,
        dtype: str | None = None,
    ):
        """`dtype`: decode dtype ("float32" | "bfloat16"; None: the model's compute dtype)."""
        _, _, rest = nnx.split(model, nnx.Param, ...)
        self.rest = jax.device_put(rest)
        self.graphdef, self.config = decode_graph(model, dtype)
        self.sp, self.mesh, self.pad_id = sp, mesh, pad_id
        self.prompt_bucket, self.batch_bucket, self.patch_bucket = (
            prompt_bucket,
            batch_bucket,
            patch_bucket,
        )
        self._fn = _jitted_generate(self.graphdef, self.config, sp)
        self._shapes: set = set()

    def compiled_shapes(self) -> int:
        """How many distinct bucketed batch shapes (= compilations) this sampler has run."""
        return len(self._shapes)

    def prepare(self, prompts: Sequence[np.ndarray], images=None,
                row_ids: Sequence[int] | None = None) -> tuple[dict, int]:
        """Left-pads prompts and concatenates image patches into one bucketed batch;
        `row_ids` (default 0..n-1) key each row's sampling."""
        n = len(prompts)
        if n == 0:
            raise ValueError("no prompts to sample from")
        b = round_up(n, self.batch_bucket)
        tp = round_up(max(len(p) for p in prompts), self.prompt_bucket)
        ids = np.full((b, tp), self.pad_id, np.int32)
        mask = np.zeros((b, tp), np.int32)
        for i, p in enumerate(prompts):
            ids[i, tp - len(p) :] = p
            mask[i, tp - len(p) :] = 1
        mask[n:, -1] = 1  # padding rows hold one (pad) token so their softmax stays finite
        images = [None] * n if images is None else list(images)
        if len(images) != n:
            raise ValueError(f"images has {len(images)} entries for {n} prompts")
        pix = [im[0] for im in images if im is not None]
        grids = [np.asarray(im[1], np.int32).reshape(-1, 3) for im in images if im is not None]
        grid = np.concatenate(grids) if grids else np.zeros((0, 3), np.int32)
        # each prompt's image tokens against its images' merged patches, all rows at once
        owner = np.repeat([i for i, im in enumerate(images) if im is not None],
                          [len(g) for g in grids]).astype(np.int64)
        want = np.bincount(owner, qinputs.num_image_tokens(
            grid, self.config.vision.spatial_merge_size), minlength=n).astype(np.int64)
        got = ((ids[:n] == self.config.image_token_id) & (mask[:n] == 1)).sum(1)
        bad = np.flatnonzero(got != want)
        if len(bad):
            i = bad[0]
            raise ValueError(
                f"prompt {i} has {got[i]} image tokens (id {self.config.image_token_id}) but "
                f"its images give {want[i]} merged patches (image_grid_thw / merge^2)"
            )
        pos, _ = qinputs.get_rope_index(ids, grid if len(grid) else None, mask, self.config)
        slots = ImageSlots.fit(
            grid,
            len(grid),
            int(grid.prod(-1).sum()),
            count_multiple=self.batch_bucket,
            patch_multiple=self.patch_bucket,
        )
        pixel_values, vpos, seg = pack_images(pix, grid, slots, self.config)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": np.asarray(pos, np.int32),
            "pixel_values": pixel_values,
            "vision_pos_ids": vpos,
            "vision_segment_ids": seg,
            "row_valid": np.arange(b) < n,
            "row_ids": _row_ids(row_ids, n, b),
        }
        return batch, n

    def sample(self, params, prompts, images=None, *, rng, row_ids=None) -> tuple[list, list]:
        """New tokens and their log-probabilities per prompt (cut after a stop token).

        `row_ids`: one int per prompt (default its index) that, with `rng`, keys the
        prompt's sampling; the rollout passes episode ids, so an episode draws the same
        tokens whatever batch (or process) it is sampled in."""
        batch, n = self.prepare(prompts, images, row_ids)
        self._shapes.add(tuple((k, v.shape) for k, v in sorted(batch.items())))
        if self.mesh is None:
            out = self._fn(params, self.rest, rng, batch)
        else:
            with jax.set_mesh(self.mesh):
                out = self._fn(params, self.rest, rng, _shard_batch(batch, self.mesh))
        tokens, logps, lengths = jax.device_get(out)
        return (
            [tokens[i, : lengths[i]] for i in range(n)],
            [logps[i, : lengths[i]] for i in range(n)],
        )


def _row_ids(row_ids, n: int, b: int) -> np.ndarray:
    """Sampling ids of a batch of b rows (n real ones); padding rows get -1."""
    if row_ids is not None and len(row_ids) != n:
        raise ValueError(f"row_ids has {len(row_ids)} entries for {n} prompts")
    ids = np.full((b,), -1, np.int32)
    ids[:n] = np.arange(n) if row_ids is None else np.asarray(row_ids)
    return ids


def _shard_batch(batch: dict, mesh) -> dict:
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    axes = ("data", "fsdp")
    n = mesh.shape["data"] * mesh.shape["fsdp"]
    out = {}
    for k, x in batch.items():
        dim = 1 if k == "position_ids" else 0
        spec = [None] * x.ndim
        if x.shape[dim] and x.shape[dim] % n == 0:
            spec[dim] = axes
        out[k] = jax.device_put(x, NamedSharding(mesh, P(*spec)))
    return out


def generate(
    model,
    prompts: Sequence[Sequence[int]],
    images=None,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    seed: int = 0,
):
    """Generates for a list of token-id prompts of different lengths.

    `images`: optional, one entry per prompt, None or (pixel_values, image_grid_thw) in
    transformers' layout. Returns (tokens, logprobs): lists with one int32 / float32 array
    per prompt, holding the new tokens up to and including the first stop token.
    """
    sp = SamplingParams(max_new_tokens, temperature, top_k, top_p, tuple(stop_token_ids))
    sampler = Sampler(model, sp)
    params = jax.device_put(nnx.state(model, nnx.Param))  # no-op for device arrays
    imgs = None
    if images is not None:
        imgs = [
            None if im is None else (np.asarray(im[0], np.float32), np.asarray(im[1]))
            for im in images
        ]
    return sampler.sample(
        params, [np.asarray(p, np.int32) for p in prompts], imgs, rng=jax.random.key(seed)
    )
