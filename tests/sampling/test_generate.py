"""Batched sampler: greedy parity with transformers generate, logprobs, stopping, sampling
filters and statistics, shape bucketing, and sharded sampling on 8 fake CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from models._tiny import nnx_from_torch, random_image, tiny, torch_model

from grow_jax.models.qwen2_vl import inputs as qi
from grow_jax.models.qwen2_vl.modeling import Qwen2VL
from grow_jax.sampling.generate import Sampler, SamplingParams, generate
from grow_jax.sharding import make_mesh, shard_model

try:  # torch-free tests still run without it; `needs_torch` ones skip (conftest)
    import torch
except ImportError:
    torch = None

IMG, VS, VE = 500, 502, 503
_MODELS: dict = {}


def _models(name="gqa2_untied"):
    if name not in _MODELS:
        c = tiny(name)
        if torch is None:  # torch-free: a random NNX model (tm is only used by needs_torch)
            _MODELS[name] = (c, None, Qwen2VL(c, rngs=nnx.Rngs(0)))
            return _MODELS[name]
        tm = torch_model(c)
        tm.generation_config.eos_token_id = None
        tm.generation_config.pad_token_id = 0
        _MODELS[name] = (c, tm, nnx_from_torch(c, tm))
    return _MODELS[name]


def _prompts(c, spec, seed=0):
    """spec: per prompt, (n_text, list of (h, w) images). Returns prompts and images."""
    rng = np.random.default_rng(seed)
    merge = c.vision.spatial_merge_size
    prompts, images = [], []
    for n_text, shapes in spec:
        ids = list(rng.integers(1, 400, n_text))
        imgs = [random_image(rng, h, w) for h, w in shapes]
        for h, w in shapes:
            ids += [VS] + [IMG] * ((h // 14) * (w // 14) // merge**2) + [VE] + [7]
        prompts.append(np.asarray(ids, np.int32))
        images.append(qi.images_to_patches(imgs, c) if imgs else None)
    return prompts, images


def _hf_generate(tm, prompt, image, n):
    kw = {"input_ids": torch.tensor(prompt[None].astype(np.int64))}
    kw["attention_mask"] = torch.ones_like(kw["input_ids"])
    if image is not None:
        kw.update(
            pixel_values=torch.tensor(image[0]),
            image_grid_thw=torch.tensor(image[1]),
            mm_token_type_ids=(kw["input_ids"] == IMG).long(),
        )
    with torch.no_grad():
        out = tm.generate(**kw, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, len(prompt) :].numpy()


SCENARIOS = {
    "text": [(5, [])],
    "image": [(3, [(56, 56)])],
    # different lengths; equal-size images (batched vision layout) and text-only rows
    "batch_equal_images": [(3, [(56, 56)]), (9, []), (4, [(56, 56), (56, 56)])],
    # different image sizes (flat vision layout)
    "batch_mixed_images": [(2, [(56, 84)]), (6, [(84, 56), (56, 56)]), (11, [])],
}


@pytest.mark.needs_torch
@pytest.mark.parametrize("name", ["gqa2_untied", "mha_tied"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_greedy_matches_transformers(name, scenario):
    c, tm, model = _models(name)
    prompts, images = _prompts(c, SCENARIOS[scenario])
    toks, _ = generate(model, prompts, images, max_new_tokens=8, temperature=0.0)
    for i, (p, im) in enumerate(zip(prompts, images, strict=True)):
        np.testing.assert_array_equal(toks[i], _hf_generate(tm, p, im, 8), err_msg=f"row {i}")


@pytest.mark.needs_torch
def test_greedy_matches_transformers_left_padded_batch():
    c, tm, model = _models("mha_tied")
    prompts, images = _prompts(c, SCENARIOS["batch_equal_images"], seed=1)
    toks, _ = generate(model, prompts, images, max_new_tokens=6)
    t = max(map(len, prompts))
    ids = np.zeros((len(prompts), t), np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, t - len(p) :], mask[i, t - len(p) :] = p, 1
    ims = [im for im in images if im is not None]
    with torch.no_grad():
        out = tm.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            pixel_values=torch.tensor(np.concatenate([im[0] for im in ims])),
            image_grid_thw=torch.tensor(np.concatenate([im[1] for im in ims])),
            mm_token_type_ids=torch.tensor((ids == IMG).astype(np.int64)),
            max_new_tokens=6,
            min_new_tokens=6,
            do_sample=False,
        )
    np.testing.assert_array_equal(np.stack(toks), out[:, t:].numpy())


def _teacher_forced_logprobs(model, prompt, image, new):
    ids = np.concatenate([prompt, new])[None]
    kw = {} if image is None else {"pixel_values": image[0], "image_grid_thw": image[1]}
    logits = np.asarray(model(ids, **kw))[0]
    lp = jax.nn.log_softmax(logits[len(prompt) - 1 : len(ids[0]) - 1], axis=-1)
    return np.take_along_axis(np.asarray(lp), new[:, None], axis=1)[:, 0]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_logprobs_equal_teacher_forced_forward(temperature):
    c, _, model = _models()
    prompts, images = _prompts(c, SCENARIOS["batch_equal_images"])
    toks, lps = generate(model, prompts, images, max_new_tokens=7, temperature=temperature, seed=3)
    for p, im, t, lp in zip(prompts, images, toks, lps, strict=True):
        assert len(t) == len(lp) == 7
        np.testing.assert_allclose(lp, _teacher_forced_logprobs(model, p, im, t), atol=1e-4)


def test_stop_tokens_rows_stop_independently_and_max_new_tokens():
    c, _, model = _models()
    prompts, images = _prompts(c, SCENARIOS["batch_mixed_images"])
    full, full_lp = generate(model, prompts, images, max_new_tokens=10)
    assert [len(t) for t in full] == [10, 10, 10]
    stop = int(full[0][3])
    toks, lps = generate(model, prompts, images, max_new_tokens=10, stop_token_ids=[stop, 511])
    cut_lengths = []
    for f, flp, t, lp in zip(full, full_lp, toks, lps, strict=True):
        hits = np.flatnonzero(np.isin(f, [stop, 511]))
        n = hits[0] + 1 if len(hits) else len(f)
        cut_lengths.append(n)
        np.testing.assert_array_equal(t, f[:n])  # stop token included, nothing after it
        np.testing.assert_allclose(lp, flp[:n], atol=1e-6)
    assert cut_lengths[0] <= 4
    assert len(set(cut_lengths)) > 1, "rows should stop at different steps in this scenario"


def test_top_k_1_and_tiny_top_p_equal_greedy():
    c, _, model = _models()
    prompts, images = _prompts(c, SCENARIOS["batch_equal_images"])
    greedy, _ = generate(model, prompts, images, max_new_tokens=6)
    for kw in ({"top_k": 1}, {"top_p": 1e-6}, {"top_k": 5, "top_p": 1e-6}):
        toks, _ = generate(model, prompts, images, max_new_tokens=6, temperature=1.0, seed=5, **kw)
        for g, t in zip(greedy, toks, strict=True):
            np.testing.assert_array_equal(t, g, err_msg=str(kw))


def test_seeds_reproduce_and_differ():
    c = tiny("gqa2_untied")
    model = Qwen2VL(c, rngs=nnx.Rngs(0))  # 0.02-std init: nearly flat next-token logits
    prompts, images = _prompts(c, SCENARIOS["batch_equal_images"])
    a, _ = generate(model, prompts, images, max_new_tokens=8, temperature=1.0, seed=1)
    b, _ = generate(model, prompts, images, max_new_tokens=8, temperature=1.0, seed=1)
    d, _ = generate(model, prompts, images, max_new_tokens=8, temperature=1.0, seed=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, d, strict=True))


@pytest.mark.needs_torch
def test_sampling_frequencies_match_softmax():
    c, tm, _ = _models()
    model = nnx_from_torch(c, tm)
    head = model.lm_head.kernel
    head.set_value(head.get_value() * 40.0)  # the random model's logits are nearly flat
    prompt = np.asarray([5, 9, 13, 2], np.int32)
    logits = np.asarray(model(prompt[None]))[0, -1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    sampler = Sampler(model, SamplingParams(max_new_tokens=1, temperature=1.0), batch_bucket=256)
    params = nnx.state(model, nnx.Param)
    draws = []
    for seed in range(8):
        toks, _ = sampler.sample(params, [prompt] * 256, rng=jax.random.key(seed))
        draws += [int(t[0]) for t in toks]
    counts = np.bincount(draws, minlength=c.text.vocab_size).astype(np.float64)
    n = len(draws)
    top = np.argsort(-probs)[:6]
    assert probs[top].sum() > 0.5, "test needs a peaked distribution"
    observed = np.append(counts[top], n - counts[top].sum())
    expected = n * np.append(probs[top], 1 - probs[top].sum())
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    assert chi2 < 25.0, (chi2, observed, expected)  # 6 dof: p ~ 3e-4 at 25


def test_bucketing_compiles_few_shapes():
    c, _, model = _models()
    # settings no other test uses, so the shared jit cache counts only this test's shapes
    sampler = Sampler(model, SamplingParams(max_new_tokens=5, temperature=1.0, top_k=7))
    params = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(0)
    for n in (3, 5, 7):
        spec = [(int(rng.integers(1, 7)), [(56, 56)]) for _ in range(n)]
        prompts, images = _prompts(c, spec, seed=n)
        assert len({len(p) for p in prompts}) > 1
        toks, _ = sampler.sample(params, prompts, images, rng=jax.random.key(n))
        assert len(toks) == n
    assert sampler.compiled_shapes() <= 2
    assert sampler._fn._cache_size() == sampler.compiled_shapes()
    # a new Sampler for the same graph and settings reuses the compiled program
    again = Sampler(model, SamplingParams(max_new_tokens=5, temperature=1.0, top_k=7))
    assert again._fn is sampler._fn


def test_prepare_rejects_mismatched_images():
    c, _, model = _models()
    prompts, images = _prompts(c, SCENARIOS["image"])
    with pytest.raises(ValueError, match="images has 2 entries for 1 prompts"):
        generate(model, prompts, images * 2)
    with pytest.raises(ValueError, match="prompt 0 has 4 image tokens"):
        generate(model, prompts, [None])


@pytest.mark.multi_device
@pytest.mark.needs_torch
def test_sharded_sampling_matches_single_device():
    assert jax.device_count() >= 8, "conftest must force 8 CPU devices"
    c, tm, model = _models()
    prompts, images = _prompts(c, SCENARIOS["batch_equal_images"])
    sp = SamplingParams(max_new_tokens=6, temperature=0.0)
    ref, ref_lp = Sampler(model, sp).sample(
        nnx.state(model, nnx.Param), prompts, images, rng=jax.random.key(0)
    )
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded = shard_model(nnx_from_torch(c, tm), mesh)
    params = nnx.state(sharded, nnx.Param)
    kernel = sharded.layers[0].mlp.gate_proj.kernel.get_value()
    assert len(kernel.sharding.device_set) == 8
    toks, lps = Sampler(sharded, sp, mesh=mesh).sample(
        params, prompts, images, rng=jax.random.key(0)
    )
    for r, t, rl, tl in zip(ref, toks, ref_lp, lps, strict=True):
        np.testing.assert_array_equal(t, r)
        np.testing.assert_allclose(tl, rl, atol=1e-5)


def test_row_ids_key_sampling_not_batch_position():
    """A prompt sampled with row id k draws the same tokens in any batch, order or size
    (what lets envs split over processes play what one process plays)."""
    c, _, model = _models()
    sampler = Sampler(model, SamplingParams(max_new_tokens=4, temperature=1.0))
    params = nnx.state(model, nnx.Param)
    prompts, _ = _prompts(c, [(5, []), (7, []), (6, []), (5, [])], seed=3)
    key = jax.random.key(11)
    full, full_lp = sampler.sample(params, prompts, rng=key, row_ids=[10, 11, 12, 13])
    part, part_lp = sampler.sample(params, [prompts[2], prompts[0]], rng=key, row_ids=[12, 10])
    np.testing.assert_array_equal(part[0], full[2])
    np.testing.assert_array_equal(part[1], full[0])
    np.testing.assert_allclose(part_lp[0], full_lp[2], atol=1e-6)
    other, _ = sampler.sample(params, [prompts[0]] * 8, rng=key, row_ids=list(range(8)))
    assert len({tuple(t) for t in other}) > 1  # distinct ids: distinct draws
    with pytest.raises(ValueError, match="row_ids has 1 entries for 2 prompts"):
        sampler.sample(params, prompts[:2], rng=key, row_ids=[0])
