"""Qwen2-VL configuration: frozen dataclasses, presets, and transformers config.json I/O.

`Qwen2VLConfig.from_hf` reads both the transformers 5.x layout (nested `text_config` /
`vision_config`) and the older flat hub layout (text fields at the top level,
`rope_scaling: {type: mrope, mrope_section: [...]}`); `to_hf` writes the 5.x layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_ACTIVATIONS = ("quick_gelu", "gelu", "silu", "relu")
_DTYPES = ("float32", "bfloat16", "float16")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """ViT tower: patch embed, `depth` blocks, and a patch merger to the text width."""

    depth: int
    embed_dim: int
    hidden_size: int  # merger output width == text hidden_size
    num_heads: int
    mlp_ratio: float
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    in_chans: int = 3
    hidden_act: str = "quick_gelu"

    def __post_init__(self):
        _check(
            self.embed_dim % self.num_heads == 0,
            f"vision embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})",
        )
        _check(
            self.head_dim % 4 == 0,
            f"vision head_dim ({self.head_dim}) must be divisible by 4 (2-D rotary: half h, half w)",
        )
        _check(
            self.hidden_act in _ACTIVATIONS,
            f"vision hidden_act {self.hidden_act!r} not supported; expected one of {_ACTIVATIONS}",
        )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch: C * temporal_patch * patch * patch."""
        return self.in_chans * self.temporal_patch_size * self.patch_size**2

    @property
    def merge_dim(self) -> int:
        return self.embed_dim * self.spatial_merge_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder with GQA and multimodal rotary embeddings (M-RoPE)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int]
    max_position_embeddings: int
    tie_word_embeddings: bool
    hidden_act: str = "silu"

    def __post_init__(self):
        object.__setattr__(self, "mrope_section", tuple(int(s) for s in self.mrope_section))
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"text hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
            f"({self.num_attention_heads})",
        )
        _check(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
            f"num_key_value_heads ({self.num_key_value_heads})",
        )
        _check(
            len(self.mrope_section) == 3 and sum(self.mrope_section) * 2 == self.head_dim,
            f"mrope_section {list(self.mrope_section)} must have 3 entries summing to head_dim/2 "
            f"= {self.head_dim // 2}",
        )
        _check(
            self.hidden_act in _ACTIVATIONS,
            f"text hidden_act {self.hidden_act!r} not supported; expected one of {_ACTIVATIONS}",
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Qwen2VLConfig:
    """Whole model: text + vision configs, special token ids, compute and parameter dtypes."""

    text: TextConfig
    vision: VisionConfig
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    remat: bool = False  # recompute each decoder layer in the backward pass (train memory)

    def __post_init__(self):
        _check(
            self.vision.hidden_size == self.text.hidden_size,
            f"vision.hidden_size ({self.vision.hidden_size}) must equal text.hidden_size "
            f"({self.text.hidden_size}): merged image features replace token embeddings",
        )
        for name in ("dtype", "param_dtype"):
            _check(
                getattr(self, name) in _DTYPES,
                f"{name} {getattr(self, name)!r} not supported; expected one of {_DTYPES}",
            )
        ids = {
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
        }
        _check(len(set(ids.values())) == 4, f"special token ids must be distinct, got {ids}")

    def replace(self, **kw) -> Qwen2VLConfig:
        return dataclasses.replace(self, **kw)

    # ---------------------------------------------------------------- presets
    @classmethod
    def tiny(cls, **overrides) -> Qwen2VLConfig:
        """A ~100k-param model for CPU tests. Overrides: any text/vision/top-level field name
        (text and vision fields are routed to their sub-config; `vision_` prefix disambiguates
        a vision field that shares a text field's name, e.g. `vision_hidden_act`)."""
        text = {
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1e6,
            "mrope_section": (2, 3, 3),
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        }
        vision = {
            "depth": 2,
            "embed_dim": 32,
            "num_heads": 4,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_chans": 3,
        }
        top = {
            "image_token_id": 500,
            "video_token_id": 501,
            "vision_start_token_id": 502,
            "vision_end_token_id": 503,
        }
        vision_fields = {f.name for f in dataclasses.fields(VisionConfig)}
        text_fields = {f.name for f in dataclasses.fields(TextConfig)}
        top_fields = {f.name for f in dataclasses.fields(cls)} - {"text", "vision"}
        for key, value in overrides.items():
            if key.startswith("vision_") and key[len("vision_") :] in vision_fields:
                vision[key[len("vision_") :]] = value
            elif key in text_fields:
                text[key] = value
            elif key in vision_fields:
                vision[key] = value
            elif key in top_fields:
                top[key] = value
            else:
                raise ValueError(f"Qwen2VLConfig.tiny: unknown override {key!r}")
        if "mrope_section" not in overrides:  # keep Qwen's 1:3:3 split for any head_dim
            half = text["hidden_size"] // text["num_attention_heads"] // 2
            text["mrope_section"] = (half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8)
        vision.setdefault("hidden_size", text["hidden_size"])
        return cls(text=TextConfig(**text), vision=VisionConfig(**vision), **top)

    @classmethod
    def qwen2_vl_7b(cls) -> Qwen2VLConfig:
        """Qwen2-VL-7B-Instruct sizes."""
        return cls(
            text=TextConfig(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                rms_norm_eps=1e-6,
                rope_theta=1e6,
                mrope_section=(16, 24, 24),
                max_position_embeddings=32768,
                tie_word_embeddings=False,
            ),
            vision=VisionConfig(
                depth=32,
                embed_dim=1280,
                hidden_size=3584,
                num_heads=16,
                mlp_ratio=4,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                in_chans=3,
            ),
            image_token_id=151655,
            video_token_id=151656,
            vision_start_token_id=151652,
            vision_end_token_id=151653,
        )

    # ------------------------------------------------------------ HF config
    @classmethod
    def from_hf(cls, d: dict[str, Any], **overrides) -> Qwen2VLConfig:
        """Build from a transformers `config.json` dict (5.x nested or legacy flat layout)."""
        model_type = d.get("model_type", "qwen2_vl")
        if model_type != "qwen2_vl":
            raise ValueError(
                f"unsupported model_type {model_type!r}: grow_jax implements only 'qwen2_vl'"
            )
        t = d.get("text_config") or d  # legacy layout keeps text fields at the top level
        v = d.get("vision_config") or {}
        rope = t.get("rope_parameters") or t.get("rope_scaling") or d.get("rope_scaling") or {}
        theta = rope.get("rope_theta", t.get("rope_theta", d.get("rope_theta", 1e6)))
        if "mrope_section" not in rope:
            raise ValueError("config.json: missing mrope_section in rope_parameters/rope_scaling")
        tie = bool(d.get("tie_word_embeddings", False) or t.get("tie_word_embeddings", False))

        def need(src, key, where):
            if key not in src:
                raise ValueError(f"config.json: missing {where}{key}")
            return src[key]

        tw = "text_config." if "text_config" in d else ""
        text = TextConfig(
            vocab_size=int(need(t, "vocab_size", tw)),
            hidden_size=int(need(t, "hidden_size", tw)),
            intermediate_size=int(need(t, "intermediate_size", tw)),
            num_hidden_layers=int(need(t, "num_hidden_layers", tw)),
            num_attention_heads=int(need(t, "num_attention_heads", tw)),
            num_key_value_heads=int(t.get("num_key_value_heads") or t["num_attention_heads"]),
            rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            mrope_section=tuple(rope["mrope_section"]),
            max_position_embeddings=int(t.get("max_position_embeddings", 32768)),
            tie_word_embeddings=tie,
            hidden_act=t.get("hidden_act", "silu"),
        )
        vision = VisionConfig(
            depth=int(need(v, "depth", "vision_config.")),
            embed_dim=int(need(v, "embed_dim", "vision_config.")),
            # Legacy hub configs carry a stale vision hidden_size (1536 for the 7B); the
            # merger always projects to the text width, which is what the weights hold.
            hidden_size=text.hidden_size,
            num_heads=int(need(v, "num_heads", "vision_config.")),
            mlp_ratio=v.get("mlp_ratio", 4),
            patch_size=int(v.get("patch_size", 14)),
            spatial_merge_size=int(v.get("spatial_merge_size", 2)),
            temporal_patch_size=int(v.get("temporal_patch_size", 2)),
            in_chans=int(v.get("in_channels", v.get("in_chans", 3))),
            hidden_act=v.get("hidden_act", "quick_gelu"),
        )
        top = {
            "image_token_id": int(d.get("image_token_id", 151655)),
            "video_token_id": int(d.get("video_token_id", 151656)),
            "vision_start_token_id": int(d.get("vision_start_token_id", 151652)),
            "vision_end_token_id": int(d.get("vision_end_token_id", 151653)),
        }
        top.update(overrides)
        return cls(text=text, vision=vision, **top)

    def to_hf(self) -> dict[str, Any]:
        """A config.json dict that transformers 5.x loads as `Qwen2VLConfig`."""
        t, v = self.text, self.vision
        hf_dtype = self.param_dtype
        return {
            "architectures": ["Qwen2VLForConditionalGeneration"],
            "model_type": "qwen2_vl",
            "dtype": hf_dtype,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": t.tie_word_embeddings,
            "text_config": {
                "model_type": "qwen2_vl_text",
                "vocab_size": t.vocab_size,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "num_key_value_heads": t.num_key_value_heads,
                "hidden_act": t.hidden_act,
                "rms_norm_eps": t.rms_norm_eps,
                "max_position_embeddings": t.max_position_embeddings,
                "tie_word_embeddings": t.tie_word_embeddings,
                "rope_parameters": {
                    "rope_type": "default",
                    "mrope_section": list(t.mrope_section),
                    "rope_theta": t.rope_theta,
                },
                "dtype": hf_dtype,
            },
            "vision_config": {
                "model_type": "qwen2_vl_vision",
                "depth": v.depth,
                "embed_dim": v.embed_dim,
                "hidden_size": v.hidden_size,
                "num_heads": v.num_heads,
                "mlp_ratio": v.mlp_ratio,
                "patch_size": v.patch_size,
                "spatial_merge_size": v.spatial_merge_size,
                "temporal_patch_size": v.temporal_patch_size,
                "in_channels": v.in_chans,
                "hidden_act": v.hidden_act,
                "dtype": hf_dtype,
            },
        }
