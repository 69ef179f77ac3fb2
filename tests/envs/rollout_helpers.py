"""Shared by the env tests that roll out a real (untrained) model through `Run`: a tiny config
and an agent wrapper whose actions the sampled tokens decide."""


def tiny_config():
    """base_config() with a one-layer tiny Qwen2-VL, compact prompts, no TensorBoard and
    synchronous checkpoints (a rollout in seconds on CPU)."""
    from grow_jax.config_utils import base_config

    c = base_config()
    c.model.preset = "tiny"
    c.model.preset_overrides = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, vision_depth=1, embed_dim=16, vision_num_heads=1, mlp_ratio=2,
        patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    c.agent.compact_prompt = True
    c.logging.tensorboard = False
    c.checkpoint.async_save = False
    return c


class FirstTokenAgent:
    """The real agent `agent`; its unparseable output (all an untrained model writes) becomes
    ``fallback(first sampled token, the agent's action)`` instead of a no-op, so the samples
    steer the episode."""

    def __init__(self, agent, fallback):
        self._agent, self.history, self._fallback = agent, agent.history, fallback

    def prompt_ids(self, *args):
        return self._agent.prompt_ids(*args)

    def decode(self, ids):
        action, valid, text = self._agent.decode(ids)
        return (action if valid else self._fallback(int(ids[0]), action)), valid, text
