"""Synthetic trajectories for the data/train tests: random frames and tokens, tiny model.

Prompts follow the agent's layout (text, <vision_start>, image pads, <vision_end>, text),
so `decision_samples` / `conversation_sample` see what a real rollout would give them.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL
from grow_jax.rollout.types import Step, Trajectory

TEXT_VOCAB = 400  # ordinary tokens are drawn below this; the tiny config's specials are 500+


def tiny_config(**overrides) -> Qwen2VLConfig:
    return Qwen2VLConfig.tiny(**overrides)


def tiny_model(config: Qwen2VLConfig | None = None, seed: int = 0) -> Qwen2VL:
    return Qwen2VL(config or tiny_config(), rngs=nnx.Rngs(seed))


def image_block(cfg: Qwen2VLConfig, frame: np.ndarray) -> np.ndarray:
    """<vision_start> + one pad per merged patch + <vision_end> for `frame` (HWC)."""
    v = cfg.vision
    n = (frame.shape[0] // v.patch_size) * (frame.shape[1] // v.patch_size)
    n //= v.spatial_merge_size**2
    return np.asarray(
        [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id], np.int32
    )


def make_trajectory(
    rng: np.random.Generator,
    cfg: Qwen2VLConfig,
    horizon: int,
    *,
    frame_hw=(28, 28),
    text_len: int = 6,
    action_len=(1, 3),
    full_history: bool = False,
    task_id: str = "synthetic",
) -> Trajectory:
    """An episode of `horizon` decisions with random frames, prompt text and action tokens.

    full_history=False: each prompt is instruction + the current frame (GROW's agent).
    full_history=True: prompt t+1 = prompt t + action t + the next frame, as a multi-turn
    conversation (what trajectory-level GRPO trains on). `frame_hw` may be a list (per step).
    """
    instr = rng.integers(1, TEXT_VOCAB, text_len).astype(np.int32)
    sizes = frame_hw if isinstance(frame_hw, list) else [frame_hw] * horizon
    steps, context = [], instr
    for t in range(horizon):
        frame = rng.integers(0, 256, (*sizes[t], 3), dtype=np.uint8)
        turn = np.concatenate([image_block(cfg, frame), rng.integers(1, TEXT_VOCAB, 2)])
        prompt = np.concatenate([context if full_history else instr, turn]).astype(np.int32)
        k = int(rng.integers(action_len[0], action_len[1] + 1))
        action = rng.integers(1, TEXT_VOCAB, k).astype(np.int32)
        steps.append(
            Step(
                frame=frame,
                prompt_ids=prompt,
                action_ids=action,
                logprobs=-rng.random(k).astype(np.float32),
                reward=float(t == horizon - 1),
            )
        )
        context = np.concatenate([prompt, action])
    return Trajectory(
        task_id=task_id,
        instruction="synthetic",
        seed=0,
        group=0,
        steps=steps,
        success=True,
        terminated=True,
    )
