"""grow_jax.models.hf_io against transformers' own Qwen2-VL save/load (tiny random models)."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from grow_jax.models import hf_io
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL

IMAGE_ID, VSTART, VEND = 500, 502, 503
HF_TINY = {
    "text_config": {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "max_position_embeddings": 512, "tie_word_embeddings": False,
    },
    "vision_config": {
        "depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
        "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_chans": 3,
    },
    "image_token_id": IMAGE_ID, "video_token_id": 501, "vision_start_token_id": VSTART,
    "vision_end_token_id": VEND,
}  # fmt: skip


def _image_prompt():
    """One 56x56 image (4x4 patches -> 4 merged tokens) inside a short text prompt."""
    ids = np.array([[11, 12, VSTART] + [IMAGE_ID] * 4 + [VEND, 13, 14, 15]], np.int64)
    pixels = np.random.default_rng(0).standard_normal((16, 3 * 2 * 14 * 14)).astype(np.float32)
    return ids, pixels, np.array([[1, 4, 4]], np.int64)


def _torch_logits(model, ids, pixels, grid):
    import torch

    with torch.no_grad():
        return (
            model(
                input_ids=torch.tensor(ids),
                pixel_values=torch.tensor(pixels),
                image_grid_thw=torch.tensor(grid),
                mm_token_type_ids=torch.tensor((ids == IMAGE_ID).astype(np.int64)),
            )
            .logits.float()
            .numpy()
        )


def _pure(model_or_state):
    state = (
        nnx.state(model_or_state, nnx.Param)
        if isinstance(model_or_state, nnx.Module)
        else model_or_state
    )
    return jax.tree.map(np.asarray, nnx.to_pure_dict(state))


def _assert_bit_identical(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (path, x), (_, y) in zip(fa, fb):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert x.tobytes() == y.tobytes(), path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer with the Qwen2-VL special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["go to the red ball and pick up the key"] * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    out = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def torch_model():
    torch = pytest.importorskip("torch")
    from transformers import Qwen2VLConfig as HFConfig
    from transformers import Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    return Qwen2VLForConditionalGeneration(HFConfig(**HF_TINY)).eval()


@pytest.fixture(scope="module")
def hf_dir(torch_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf_tiny")
    torch_model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def jax_model():
    """A random grow_jax model (no torch needed) and its HF export."""
    return Qwen2VL(Qwen2VLConfig.tiny(), rngs=nnx.Rngs(1))


# ------------------------------------------------------------------ parity with transformers
@pytest.mark.needs_torch
def test_load_pretrained_matches_transformers_logits(torch_model, hf_dir):
    model = hf_io.load_pretrained(hf_dir)
    ids, pixels, grid = _image_prompt()
    ref = _torch_logits(torch_model, ids, pixels, grid)
    np.testing.assert_allclose(np.asarray(model(ids, pixels, grid)), ref, atol=1e-4, rtol=0)


@pytest.mark.needs_torch
def test_export_loads_in_transformers_with_identical_logits(
    torch_model, hf_dir, tokenizer_dir, tmp_path
):
    from transformers import AutoImageProcessor, AutoTokenizer, Qwen2VLForConditionalGeneration

    model = hf_io.load_pretrained(hf_dir)
    out = hf_io.save_pretrained(
        model, tmp_path / "export", config=model.config, tokenizer_dir=tokenizer_dir
    )
    assert sorted(os.listdir(tmp_path)) == ["export"]  # no temp folder left behind
    reloaded = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    ids, pixels, grid = _image_prompt()
    np.testing.assert_array_equal(
        _torch_logits(reloaded, ids, pixels, grid), _torch_logits(torch_model, ids, pixels, grid)
    )

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template is not None and tok.eos_token == "<|endoftext|>"
    image_processor = AutoImageProcessor.from_pretrained(out, backend="pil")
    assert type(image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert (
        image_processor.patch_size,
        image_processor.merge_size,
        image_processor.temporal_patch_size,
    ) == (14, 2, 2)
    features = image_processor(images=[np.zeros((56, 56, 3), np.uint8)], return_tensors="np")
    np.testing.assert_array_equal(features["image_grid_thw"], [[1, 4, 4]])
    with open(os.path.join(out, "generation_config.json")) as f:
        assert json.load(f)["eos_token_id"] == tok.eos_token_id


@pytest.mark.needs_torch
def test_export_resolves_to_qwen2vl_processor(jax_model, tokenizer_dir, tmp_path):
    """AutoProcessor picks Qwen2VLProcessor from the folder. Without torchvision (never installed
    here) transformers can only fail at the video processor, after resolving everything else."""
    import importlib.util

    from transformers import AutoProcessor

    out = hf_io.save_pretrained(
        jax_model, tmp_path / "p", config=jax_model.config, tokenizer_dir=tokenizer_dir
    )
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises((ImportError, ValueError), match="(?i)torchvision"):
            AutoProcessor.from_pretrained(out)
    else:
        assert type(AutoProcessor.from_pretrained(out)).__name__ == "Qwen2VLProcessor"


@pytest.mark.needs_torch
def test_sharded_export_and_import(hf_dir, torch_model, tokenizer_dir, tmp_path):
    from transformers import Qwen2VLForConditionalGeneration

    model = hf_io.load_pretrained(hf_dir)
    out = hf_io.save_pretrained(
        model,
        tmp_path / "sharded",
        config=model.config,
        tokenizer_dir=tokenizer_dir,
        max_shard_bytes=200_000,
    )
    shards = sorted(n for n in os.listdir(out) if n.endswith(".safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    with open(os.path.join(out, hf_io.INDEX_FILE)) as f:
        index = json.load(f)
    assert set(index["weight_map"].values()) == set(shards)
    _assert_bit_identical(_pure(hf_io.load_pretrained(out)), _pure(model))
    reloaded = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    ids, pixels, grid = _image_prompt()
    np.testing.assert_array_equal(
        _torch_logits(reloaded, ids, pixels, grid), _torch_logits(torch_model, ids, pixels, grid)
    )


@pytest.mark.needs_torch
def test_legacy_key_names_import(hf_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(os.path.join(hf_dir, "model.safetensors"))
    legacy = {}
    for key, value in tensors.items():
        if key.startswith("model.visual."):
            key = "visual." + key[len("model.visual.") :]
        elif key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        legacy[key] = value
    assert any(k.startswith("visual.") for k in legacy) and "model.embed_tokens.weight" in legacy
    out = tmp_path / "legacy"
    out.mkdir()
    shutil.copy(os.path.join(hf_dir, "config.json"), out / "config.json")
    save_file(legacy, str(out / "model.safetensors"), metadata={"format": "pt"})
    _assert_bit_identical(_pure(hf_io.load_pretrained(out)), _pure(hf_io.load_pretrained(hf_dir)))


# ------------------------------------------------------------------ round trips (no torch)
def test_roundtrip_is_bit_identical(jax_model, tokenizer_dir, tmp_path):
    out = hf_io.save_pretrained(
        nnx.state(jax_model, nnx.Param),
        tmp_path / "rt",
        config=jax_model.config,
        tokenizer_dir=tokenizer_dir,
    )
    reloaded = hf_io.load_pretrained(out)
    assert reloaded.config == jax_model.config
    _assert_bit_identical(_pure(reloaded), _pure(jax_model))


def test_bf16_roundtrip_and_dtype(jax_model, tokenizer_dir, tmp_path):
    config = jax_model.config.replace(param_dtype="bfloat16")
    params = jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), _pure(jax_model))
    out = hf_io.save_pretrained(
        params, tmp_path / "bf16", config=config, tokenizer_dir=tokenizer_dir
    )
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"
    reloaded = hf_io.load_pretrained(out, param_dtype="bfloat16")
    _assert_bit_identical(_pure(reloaded), params)
    as_f32 = hf_io.load_pretrained(out)  # default: float32 parameters
    assert _pure(as_f32)["lm_head"]["kernel"].dtype == np.float32


@pytest.mark.multi_device
def test_load_onto_mesh(jax_model, tokenizer_dir, tmp_path):
    from grow_jax import sharding

    out = hf_io.save_pretrained(
        jax_model, tmp_path / "m", config=jax_model.config, tokenizer_dir=tokenizer_dir
    )
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    model = hf_io.load_pretrained(out, mesh=mesh)
    kernel = model.layers[0].mlp.up_proj.kernel.get_value()
    assert kernel.sharding.mesh == mesh and len(kernel.addressable_shards) == 8
    assert not kernel.sharding.is_fully_replicated
    _assert_bit_identical(_pure(model), _pure(jax_model))


def test_refuses_to_overwrite(jax_model, tokenizer_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        hf_io.save_pretrained(jax_model, out, config=jax_model.config, tokenizer_dir=tokenizer_dir)
    assert os.listdir(out) == ["keep.txt"]
    hf_io.save_pretrained(
        jax_model, out, config=jax_model.config, tokenizer_dir=tokenizer_dir, overwrite=True
    )
    assert "keep.txt" not in os.listdir(out) and "model.safetensors" in os.listdir(out)
    assert sorted(os.listdir(tmp_path)) == ["busy"]


# ------------------------------------------------------------------ bad inputs
@pytest.fixture()
def exported(jax_model, tokenizer_dir, tmp_path):
    return hf_io.save_pretrained(
        jax_model,
        tmp_path / "exp",
        config=jax_model.config,
        tokenizer_dir=tokenizer_dir,
        max_shard_bytes=200_000,
    )


def test_missing_config_json(exported):
    os.remove(os.path.join(exported, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        hf_io.load_pretrained(exported)


def test_missing_shard_file(exported):
    shards = sorted(f for f in os.listdir(exported) if f.startswith("model-"))
    assert len(shards) > 1
    os.remove(os.path.join(exported, shards[1]))
    with pytest.raises(FileNotFoundError, match=f"shard '{shards[1]}', which is missing"):
        hf_io.load_pretrained(exported)


def test_unsupported_architecture(exported):
    path = os.path.join(exported, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["architectures"], cfg["model_type"] = ["LlamaForCausalLM"], "llama"
    with open(path, "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match=r"LlamaForCausalLM.*config\.json|config\.json.*Llama"):
        hf_io.load_pretrained(exported)


def test_shape_mismatch_and_unexpected_tensors_reported_together(
    jax_model, tokenizer_dir, tmp_path
):
    from safetensors.numpy import load_file, save_file

    out = hf_io.save_pretrained(
        jax_model, tmp_path / "bad", config=jax_model.config, tokenizer_dir=tokenizer_dir
    )
    path = os.path.join(out, "model.safetensors")
    tensors = load_file(path)
    key = "model.language_model.layers.1.mlp.up_proj.weight"
    tensors[key] = tensors[key][:, :10]
    del tensors["model.visual.merger.ln_q.bias"]
    tensors["model.extra_head.weight"] = np.zeros(3, np.float32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        hf_io.load_pretrained(out)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert key in msg and "(128, 10)" in msg and "(128, 64)" in msg
    assert "missing tensor 'model.visual.merger.ln_q.bias'" in msg
    assert "unexpected tensor 'model.extra_head.weight'" in msg


@pytest.mark.needs_torch
def test_default_tokenizer_export_end_to_end_with_transformers_preprocessing(tmp_path):
    """Bundled tokenizer + written preprocessor config: transformers' own chat template and
    PIL image processor feed both models the same inputs, and the logits agree."""
    from transformers import (
        AutoImageProcessor,
        AutoTokenizer,
        Qwen2VLForConditionalGeneration,
    )

    from grow_jax.agent.tokenizer import load_tokenizer, special_token_ids

    ids = special_token_ids(load_tokenizer())
    config = Qwen2VLConfig.tiny(
        vocab_size=1600,
        image_token_id=ids.image_pad,
        video_token_id=ids.video_pad,
        vision_start_token_id=ids.vision_start,
        vision_end_token_id=ids.vision_end,
    )
    model = Qwen2VL(config, rngs=nnx.Rngs(2))
    out = hf_io.save_pretrained(model, tmp_path / "default_tok", config=config)
    assert "chat_template.jinja" in os.listdir(out)

    tok = AutoTokenizer.from_pretrained(out)
    image_processor = AutoImageProcessor.from_pretrained(out, backend="pil")
    image = np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    features = image_processor(images=[image], return_tensors="np")
    grid = features["image_grid_thw"]
    n_tokens = int(grid.prod() // config.vision.spatial_merge_size**2)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "go"}]}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = text.replace("<|image_pad|>", "<|image_pad|>" * n_tokens)
    input_ids = np.array([tok(text)["input_ids"]], np.int64)
    assert int((input_ids == config.image_token_id).sum()) == n_tokens

    import torch

    reference = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        ref = reference(
            input_ids=torch.tensor(input_ids),
            pixel_values=torch.tensor(features["pixel_values"]),
            image_grid_thw=torch.tensor(grid),
            mm_token_type_ids=torch.tensor((input_ids == config.image_token_id).astype(np.int64)),
        ).logits.numpy()
    ours = np.asarray(model(input_ids, features["pixel_values"], grid))
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    with open(os.path.join(out, "generation_config.json")) as f:
        generation = json.load(f)
    assert generation["eos_token_id"] == ids.im_end and generation["pad_token_id"] == ids.pad
