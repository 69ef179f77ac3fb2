"""One JAX peer (tunix or EasyDeL) as a subprocess of benchmarks/peers.py, run with the
peer's own virtualenv (it never imports grow_jax: its pins differ from ours).

    <venv>/bin/python benchmarks/peer_worker.py --peer=tunix --work=WORK.json

WORK.json (written by peers.py) names the weights folder, the model sizes, the prompts and
the train batch. The worker loads the weights, then answers one JSON line on stdout per
command line on stdin: `generate` (greedy, the new tokens and the seconds taken), `train`
(one GRPO step: loss and seconds), `quit`. The first reply is {"ready": ..., "versions"}.
Its own log goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import metadata

import numpy as np

VERSIONS = ("jax", "jaxlib", "flax", "optax", "transformers", "google-tunix", "easydel")


def _versions() -> dict:
    out = {}
    for name in VERSIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class IdTokenizer:
    """Text <-> ids as space-separated integers: the prompts are random ids (no hub
    tokenizer here), so both sides see exactly the same token ids."""

    def encode(self, text: str, **_) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(str(int(i)) for i in ids)

    def bos_id(self):
        return None  # no BOS: the prompts are used as given

    def eos_id(self) -> int:
        return -1  # never sampled: exactly max_generation_steps tokens

    def pad_id(self) -> int:
        return 0


class Tunix:
    """tunix's text-only Qwen2 (`tunix.models.qwen2`), its `Sampler`, and one step of its
    GRPO policy loss (`grpo_loss_fn`, beta 0) + clip + AdamW under `nnx.jit`."""

    def __init__(self, work: dict):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx
        from tunix.generate import sampler as tsampler
        from tunix.models.qwen2 import model as qmodel
        from tunix.models.qwen2 import params as qparams
        from tunix.rl import algo_core
        from tunix.rl.grpo import grpo_learner

        t = work["text_config"]
        cfg = qmodel.ModelConfig(
            num_layers=t["num_hidden_layers"], vocab_size=t["vocab_size"],
            embed_dim=t["hidden_size"], hidden_dim=t["intermediate_size"],
            num_heads=t["num_attention_heads"], head_dim=t["head_dim"],
            num_kv_heads=t["num_key_value_heads"], rope_theta=t["rope_theta"],
            norm_eps=t["rms_norm_eps"], use_tied_embedding=t["tie_word_embeddings"],
        )
        self.jax, self.work = jax, work
        self.model = qparams.create_model_from_safe_tensors(work["qwen2_dir"], cfg)
        g = work["generate"]
        self.prompts = [" ".join(map(str, p)) for p in g["prompts"]]
        self.new_tokens, self.prompt_len = g["new_tokens"], g["prompt_len"]
        self.sampler = tsampler.Sampler(
            self.model, IdTokenizer(),
            tsampler.CacheConfig(cache_size=self.prompt_len + self.new_tokens,
                                 num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads,
                                 head_dim=cfg.head_dim),
        )
        tr = work["train"]
        self.example = grpo_learner.TrainExample(
            prompt_ids=jnp.asarray(tr["prompt_ids"], jnp.int32),  # left-padded with 0
            prompt_mask=jnp.asarray(np.asarray(tr["prompt_ids"]) != 0, jnp.int32),
            completion_ids=jnp.asarray(tr["completion_ids"], jnp.int32),
            completion_mask=jnp.ones(np.shape(tr["completion_ids"]), jnp.int32),
            advantages=jnp.asarray(tr["advantages"], jnp.float32),
            ref_per_token_logps=None,
            old_per_token_logps=jnp.asarray(tr["old_logprobs"], jnp.float32),
        )
        algo = grpo_learner.GRPOConfig(num_generations=2, beta=0.0, epsilon=tr["clip"],
                                       loss_agg_mode="token-mean")
        # 0.1.7's grpo_loss_fn reads algo_config.temperature, which its GRPOConfig lacks
        # (the learner passes the rollout's); 1.0 = the logprobs of the raw policy, as ours
        algo.temperature = 1.0
        o = tr["optimizer"]
        tx = optax.chain(optax.clip_by_global_norm(o["grad_clip"]),
                         optax.adamw(o["lr"], b1=o["b1"], b2=o["b2"], eps=o["eps"],
                                     weight_decay=o["weight_decay"]))
        self.opt = nnx.Optimizer(self.model, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, example):
            def loss_fn(m):
                loss, _ = algo_core.grpo_loss_fn(m, example, algo, pad_id=0, eos_id=-1)
                return loss

            loss, grads = nnx.value_and_grad(loss_fn)(model)
            opt.update(model, grads)
            return loss

        self._step = step

    def generate(self) -> list[list[int]]:
        out = self.sampler(self.prompts, max_generation_steps=self.new_tokens,
                           max_prompt_length=self.prompt_len, temperature=0.0,
                           eos_tokens=[-1])
        return [np.asarray(t).tolist() for t in out.tokens]

    def train(self) -> float:
        return float(self._step(self.model, self.opt, self.example))


class EasyDeL:
    """EasyDeL's Qwen2-VL (`AutoEasyDeLModelForImageTextToText` from the HF folder; its
    loader needs torch), generation through its eSurge engine, and one `grpo_step`
    (loss_type "bnpo": token mean over the batch, beta 0) with its optimizer state."""

    def __init__(self, work: dict):
        import functools

        import easydel as ed
        import jax
        import jax.numpy as jnp
        import optax
        from easydel.trainers.group_relative_policy_optimization import _fn as grpo_fn
        from jax.sharding import PartitionSpec

        self.model = ed.AutoEasyDeLModelForImageTextToText.from_pretrained(
            work["qwen2_vl_dir"], dtype=jnp.float32, param_dtype=jnp.float32,
            backend=ed.EasyDeLBackends.CPU, platform=ed.EasyDeLPlatforms.JAX,
            sharding_axis_dims=(1, 1, 1, -1, 1), local_files_only=True,
        )
        g = work["generate"]
        self.prompts = [" ".join(map(str, p)) for p in g["prompts"]]
        self.params = ed.SamplingParams(max_tokens=g["new_tokens"], temperature=0.0,
                                        ignore_eos=True)
        self.engine = ed.eSurge(
            model=self.model,
            processor=_hf_id_tokenizer(work["text_config"]["vocab_size"],
                                       os.path.join(os.path.dirname(work["qwen2_dir"]), "ids_tok")),
            dtype=jnp.float32, max_model_len=g["prompt_len"] + g["new_tokens"],
            max_num_seqs=len(self.prompts), page_size=16, silent_mode=True,
        )
        self.engine.initiate()
        tr = work["train"]
        o = tr["optimizer"]
        tx = optax.chain(optax.clip_by_global_norm(o["grad_clip"]),
                         optax.adamw(o["lr"], b1=o["b1"], b2=o["b2"], eps=o["eps"],
                                     weight_decay=o["weight_decay"]))
        self.state = self.model.to_state().init_tx(tx)
        pid = np.asarray(tr["prompt_ids"])
        self.batch = {
            "prompt_ids": jnp.asarray(pid, jnp.int32),
            "prompt_mask": jnp.asarray(pid != 0, jnp.int32),
            "completion_ids": jnp.asarray(tr["completion_ids"], jnp.int32),
            "completion_mask": jnp.ones(np.shape(tr["completion_ids"]), jnp.int32),
            "advantages": jnp.asarray(tr["advantages"], jnp.float32),
            "old_per_token_logps": jnp.asarray(tr["old_logprobs"], jnp.float32),
        }
        self._step = jax.jit(functools.partial(
            grpo_fn.grpo_step, num_generations=1, beta=0.0, loss_type="bnpo",
            epsilon=tr["clip"], epsilon_high=tr["clip"], partition_spec=PartitionSpec(),
        ), donate_argnums=(0,))

    def generate(self) -> list[list[int]]:
        outs = self.engine.generate(self.prompts, self.params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def train(self) -> float:
        with self.model.mesh:
            self.state, metrics = self._step(self.state, self.batch)
        return float(metrics.loss)


def _hf_id_tokenizer(vocab_size: int, out: str) -> str:
    """Folder of a transformers tokenizer doing what IdTokenizer does (eSurge takes text
    prompts, and its tokenizer workers load the tokenizer from a path)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({str(i): i for i in range(vocab_size)}, unk_token="0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="0", eos_token="0").save_pretrained(out)
    return out


PEERS = {"tunix": Tunix, "easydel": EasyDeL}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peer", required=True, choices=sorted(PEERS))
    p.add_argument("--work", required=True, help="WORK.json written by peers.py")
    args = p.parse_args(argv)
    with open(args.work) as f:
        work = json.load(f)
    reply = lambda d: print(json.dumps(d), flush=True)  # noqa: E731
    t0 = time.perf_counter()
    side = PEERS[args.peer](work)
    reply({"ready": round(time.perf_counter() - t0, 2), "versions": _versions()})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        t0 = time.perf_counter()
        if cmd == "generate":
            out = {"tokens": side.generate()}
        elif cmd == "train":
            out = {"loss": side.train()}
        else:
            out = {"error": f"unknown command {cmd!r}"}
        reply(out | {"s": time.perf_counter() - t0})


if __name__ == "__main__":
    main()
