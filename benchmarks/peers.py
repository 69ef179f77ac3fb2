"""JAX peers side by side: grow_jax vs tunix (and EasyDeL) on the same weights and prompts.

Each peer pins versions that differ from ours, so it runs in its own virtualenv under
`benchmarks/.venvs/<peer>` (created here with `pip install <pins>`; git-ignored; never in
CI) as a subprocess (`benchmarks/peer_worker.py`) driven line by line, while grow_jax runs
in this process. Both load one random Qwen2-VL written by `grow_jax.models.hf_io.
save_pretrained` (the peer reads a text-only Qwen2 copy of it, `model.*` names, when it
has no Qwen2-VL). Workload, identical on both sides:

- generate: a batch of text prompts (random token ids, different lengths, left-padded),
  greedy, exactly `--new_tokens` new tokens (no stop token); end-to-end seconds per call.
- train: one GRPO step (clipped-ratio policy loss, token mean over the completions, no
  KL), global-norm clipping 1.0 and AdamW, on `--train_batch` prompt + completion samples.

Calls alternate peer / grow_jax, so machine load hits both alike; medians are reported.
If a peer cannot be installed or run, the exact command and error go into the results.

    python benchmarks/peers.py                        # writes results + docs section
    python benchmarks/peers.py --size=small --repeats=2 --no_write   # quick look
    python benchmarks/peers.py --doc_only             # section from the stored JSON

Writes benchmarks/results/peers.json and the "JAX peers" section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import MODEL_100M, cpu_info, write_section  # benchmarks/_common.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "peers.json"
VENVS = ROOT / "benchmarks" / ".venvs"
WORKER = ROOT / "benchmarks" / "peer_worker.py"
SECTION = "## JAX peers"

# peer -> what `pip install` gets in its virtualenv; same_jax: also pin our jax version
# (EasyDeL's eformer/ejkernel pins hold it at its own jax)
PEERS = {
    "tunix": {"pins": ["google-tunix==0.1.7"], "same_jax": True,
              "what": "tunix `Sampler` and `grpo_loss_fn` on its text-only Qwen2 "
                      "(`tunix.models.qwen2`)"},
    # pillow: easydel 0.3.0 imports PIL at `import easydel` but does not declare it
    "easydel": {"pins": ["easydel==0.3.0", "torch==2.13.0+cpu", "pillow"], "same_jax": False,
                "what": "EasyDeL Qwen2-VL (Flax NNX) with its eSurge engine and `grpo_step` "
                        "(its HF loader imports torch: the CPU wheel)"},
}
# Qwen2VLConfig.tiny overrides; "small" is for a quick look or a loaded machine
SIZES = {"100m": MODEL_100M, "small": {**MODEL_100M, "hidden_size": 256, "intermediate_size": 688,
                                       "num_hidden_layers": 4, "num_attention_heads": 4,
                                       "vocab_size": 8192, "image_token_id": 8182,
                                       "video_token_id": 8183, "vision_start_token_id": 8184,
                                       "vision_end_token_id": 8185}}


# ----------------------------------------------------------------------------- venvs
def ensure_venv(peer: str, jax_version: str, log_dir: Path) -> dict:
    """The peer's virtualenv python, installing it if needed: {"python", "install_cmd"} or
    {"error", "install_cmd"} (the last lines of pip's output)."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    pins = PEERS[peer]["pins"] + ([f"jax=={jax_version}"] if PEERS[peer]["same_jax"] else [])
    cmd = [str(python), "-m", "pip", "install", *pins]
    shown = f"python -m venv benchmarks/.venvs/{peer} && benchmarks/.venvs/{peer}/bin/" + \
        " ".join(["pip", "install", *pins])
    marker = venv / "installed.json"
    if marker.exists() and json.loads(marker.read_text()).get("pins") == pins:
        return {"python": str(python), "install_cmd": shown}
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = log_dir / f"install_{peer}.log"
    print(f"installing {peer}: {' '.join(pins)} (log: {log})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(["nice", "-n", "10", *cmd], stdout=f,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = [ln for ln in log.read_text().splitlines() if not ln.startswith("WARNING: Location")]
        return {"error": "\n".join(tail[-12:]), "install_cmd": shown}
    marker.write_text(json.dumps({"pins": pins, "install_s": round(time.perf_counter() - t0)}))
    return {"python": str(python), "install_cmd": shown}


class Peer:
    """The worker subprocess: one JSON line per command."""

    def __init__(self, peer: str, python: str, work_path: Path, log_path: Path,
                 timeout_s: float):
        self.log, self.timeout_s = open(log_path, "w"), timeout_s
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [python, str(WORKER), f"--peer={peer}", f"--work={work_path}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        if not select.select([self.proc.stdout], [], [], self.timeout_s)[0]:
            self.proc.kill()
            self.proc.wait()
            raise TimeoutError(f"no answer from the peer worker within {self.timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"peer worker exited with {self.proc.returncode}; "
                               f"see {self.log.name}")
        return json.loads(line)

    def call(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(out["error"])
        return out

    def close(self):
        if self.proc.poll() is None and not self.proc.stdin.closed:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.log.close()


# ----------------------------------------------------------------------------- workload
def write_weights(config, out: Path, seed: int = 0):
    """Random grow_jax Qwen2-VL -> `out/qwen2_vl` (HF folder) and `out/qwen2` (its text
    decoder under Qwen2's `model.*` names, for text-only peers); returns the model (read
    back from `out` when an earlier run wrote the same config)."""
    from flax import nnx
    from safetensors.numpy import load_file, save_file

    from grow_jax.models import hf_io
    from grow_jax.models.qwen2_vl.modeling import Qwen2VL

    vl = out / "qwen2_vl"
    hf = json.loads(json.dumps(config.to_hf()))
    # EasyDeL 0.3.0's Qwen2-VL reads text fields (vocab_size, ...) at the top level, as in
    # the hub's older config.json layout; transformers 5.x and grow_jax read text_config
    legacy = {k: v for k, v in hf["text_config"].items() if k not in hf}
    if (out / "qwen2" / "model.safetensors").exists() and \
            json.loads((vl / "config.json").read_text()) == hf | legacy:
        return hf_io.load_pretrained(vl)  # written by an earlier run of this size and seed
    model = nnx.jit(lambda: Qwen2VL(config, rngs=nnx.Rngs(seed)))()  # one compile, not per op
    vl = hf_io.save_pretrained(model, vl, config=config, overwrite=True)
    Path(vl, "config.json").write_text(json.dumps(hf | legacy, indent=2))
    lm = "model.language_model."
    text = {("model." + k[len(lm):] if k.startswith(lm) else k): v
            for k, v in load_file(os.path.join(vl, hf_io.SINGLE_FILE)).items()
            if not k.startswith("model.visual.")}
    (out / "qwen2").mkdir(parents=True, exist_ok=True)
    save_file(text, str(out / "qwen2" / "model.safetensors"), metadata={"format": "pt"})
    return model


def make_work(config, args, out: Path) -> dict:
    """Prompts and the GRPO batch, as plain lists (both sides read the same)."""
    rng = np.random.default_rng(1)
    hi = config.image_token_id - 1  # ids 1..hi: no pad (0), no vision specials
    prompts = [rng.integers(1, hi, int(n)).tolist()
               for n in rng.integers(args.prompt_min, args.prompt_max + 1, args.batch)]
    tb, k = args.train_batch, args.completion_len
    plens = rng.integers(args.prompt_min, args.prompt_max + 1, tb)
    p = int(plens.max())
    prompt_ids = np.zeros((tb, p), np.int64)
    for i, n in enumerate(plens):
        prompt_ids[i, p - n:] = rng.integers(1, hi, int(n))
    t = config.text
    from train_step import Opt  # benchmarks/train_step.py: the optimizer settings

    return {
        "qwen2_vl_dir": str(out / "qwen2_vl"),
        "qwen2_dir": str(out / "qwen2"),
        "text_config": {
            "num_hidden_layers": t.num_hidden_layers, "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size, "intermediate_size": t.intermediate_size,
            "num_attention_heads": t.num_attention_heads, "head_dim": t.head_dim,
            "num_key_value_heads": t.num_key_value_heads, "rope_theta": t.rope_theta,
            "rms_norm_eps": t.rms_norm_eps, "tie_word_embeddings": t.tie_word_embeddings,
        },
        "generate": {"prompts": prompts, "new_tokens": args.new_tokens,
                     "prompt_len": int(2 ** np.ceil(np.log2(args.prompt_max)))},
        "train": {
            "prompt_ids": prompt_ids.tolist(),
            "completion_ids": rng.integers(1, hi, (tb, k)).tolist(),
            "old_logprobs": (-np.log(t.vocab_size) - rng.random((tb, k))).tolist(),
            "advantages": rng.normal(size=tb).tolist(),
            "clip": 0.2,
            "optimizer": {"lr": Opt.lr, "b1": Opt.b1, "b2": Opt.b2, "eps": Opt.eps,
                          "weight_decay": Opt.weight_decay, "grad_clip": Opt.grad_clip},
        },
    }


class Ours:
    """grow_jax's `Sampler` (benchmarks/sampler.py's JaxSide) and `Learner.step`
    (benchmarks/train_step.py's JaxSide) on the same work."""

    def __init__(self, model, config, work: dict):
        import sampler
        import train_step

        from grow_jax.data.samples import BatchShape, collate, make_sample

        g, tr = work["generate"], work["train"]
        prompts = [np.asarray(p, np.int32) for p in g["prompts"]]
        self.n = g["new_tokens"]
        self.gen = sampler.JaxSide(model, (prompts, None), self.n, dtype="float32")
        samples = []
        for ids, comp, old, adv in zip(tr["prompt_ids"], tr["completion_ids"],
                                       tr["old_logprobs"], tr["advantages"]):
            prompt = [i for i in ids if i != 0]
            k = len(comp)
            samples.append(make_sample(prompt + comp, [], len(prompt) - 1 + np.arange(k),
                                       old, np.full(k, adv), config))
        batch = collate(samples, BatchShape.fit(samples, len(samples)), config)
        self.train_side = train_step.JaxSide(model, batch, copy_params=True)

    def generate(self) -> list[list[int]]:
        return self.gen.run(self.n).tolist()

    def train(self) -> float:
        return self.train_side.step()


# ----------------------------------------------------------------------------- running
def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_peer(peer: str, python: str, ours: Ours, work_path: Path, args) -> dict:
    """Interleaved generate and train calls on both sides."""
    side = Peer(peer, python, work_path, work_path.parent / f"worker_{peer}.log",
                args.peer_timeout_s)
    try:
        res = {"versions": side.ready["versions"], "load_s": side.ready["ready"]}
        for task in ("generate", "train"):
            first = {"peer": side.call(task), "ours": _timed(getattr(ours, task))}
            for _ in range(args.warmup):  # tunix's second train call compiles again
                side.call(task), getattr(ours, task)()
            times = {"peer": [], "ours": []}
            for _ in range(args.repeats):
                out = side.call(task)
                times["peer"].append(out["s"])
                dt, mine = _timed(getattr(ours, task))
                times["ours"].append(dt)
            res[task] = {
                "compile_plus_first_s": {"peer": round(first["peer"]["s"], 2),
                                         "ours": round(first["ours"][0], 2)},
                "s": {k: round(statistics.median(v), 4) for k, v in times.items()},
                "s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
            }
            if task == "generate":
                a, b = np.asarray(out["tokens"]), np.asarray(mine)
                res[task]["greedy_tokens_equal_frac"] = (
                    float((a == b).mean()) if a.shape == b.shape else None)
                res[task]["peer_tokens_shape"] = list(a.shape)
            else:  # the first step's loss: same weights, same batch
                lp, lo = first["peer"]["loss"], first["ours"][1]
                res[task]["first_loss"] = {"peer": lp, "ours": lo}
                res[task]["first_loss_abs_diff"] = abs(lp - lo)
        g, tr = res["generate"]["s"], res["train"]["s"]
        toks = args.batch * args.new_tokens
        res["tokens_per_s"] = {k: round(toks / v, 1) for k, v in g.items()}
        res["speedup_generate"] = round(g["peer"] / g["ours"], 2)
        res["speedup_train"] = round(tr["peer"] / tr["ours"], 2)
        return res
    finally:
        side.close()


def run(args) -> dict:
    import jax

    from grow_jax.models.qwen2_vl.config import Qwen2VLConfig

    load_start = round(os.getloadavg()[0], 2)
    work_dir = VENVS / "work" / args.size
    work_dir.mkdir(parents=True, exist_ok=True)
    config = Qwen2VLConfig.tiny(**SIZES[args.size])
    model = write_weights(config, work_dir)
    work = make_work(config, args, work_dir)
    work_path = work_dir / "work.json"
    work_path.write_text(json.dumps(work))
    ours = Ours(model, config, work)
    t = config.text
    n_text = (t.vocab_size * t.hidden_size * (1 if t.tie_word_embeddings else 2)
              + t.num_hidden_layers * (2 * t.hidden_size * t.head_dim
                                       * (t.num_attention_heads + t.num_key_value_heads)
                                       + 3 * t.hidden_size * t.intermediate_size))
    out = {
        "machine": {"platform": platform.platform(), "cpu": cpu_info(), "cpus": os.cpu_count(),
                    "load_avg_1m_start": load_start},
        "command": "python benchmarks/peers.py " + " ".join(sys.argv[1:]),
        "ours": {"jax": jax.__version__, "flax": _version("flax")},
        "settings": {"size": args.size, "text_params_M": round(n_text / 1e6, 1),
                     "hidden_size": t.hidden_size, "layers": t.num_hidden_layers,
                     "vocab_size": t.vocab_size, "batch": args.batch,
                     "new_tokens": args.new_tokens,
                     "prompt_tokens": [args.prompt_min, args.prompt_max],
                     "train_batch": args.train_batch, "completion_len": args.completion_len,
                     "repeats": args.repeats, "warmup": args.warmup},
        "peers": {},
    }
    if RESULTS.exists():  # peers not run now keep their entries from a run of equal settings
        old = json.loads(RESULTS.read_text())
        if old.get("settings") == out["settings"]:
            out["peers"] = {k: v for k, v in old["peers"].items() if k not in args.peers}
    for peer in args.peers.split(","):
        print(f"== {peer}", file=sys.stderr, flush=True)
        venv = ensure_venv(peer, jax.__version__, work_dir)
        entry = {"install_cmd": venv["install_cmd"], "what": PEERS[peer]["what"],
                 "load_avg_1m_start": round(os.getloadavg()[0], 2)}
        if "error" in venv:
            out["peers"][peer] = entry | {"error": "install failed:\n" + venv["error"]}
            continue
        try:
            entry |= bench_peer(peer, venv["python"], ours, work_path, args)
        except Exception as e:  # noqa: BLE001 - recorded for the docs, then the next peer
            log = work_dir / f"worker_{peer}.log"
            tail = log.read_text().splitlines()[-12:] if log.exists() else []
            entry["error"] = f"{type(e).__name__}: {e}\n" + "\n".join(tail)
        entry["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
        out["peers"][peer] = entry
        print(json.dumps(entry, indent=1)[:4000], file=sys.stderr, flush=True)
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


# ----------------------------------------------------------------------------- docs
def section(r: dict) -> str:
    m, s, cpu = r["machine"], r["settings"], r["machine"]["cpu"]
    flags = ", ".join(cpu["flags"]) or "none of AVX2/AVX-512/AMX"
    lines = [
        SECTION, "",
        "Written by `benchmarks/peers.py` from `benchmarks/results/peers.json`; do not edit "
        "by hand.", "",
        f"Measured on: {cpu['model']} ({m['cpus']} CPUs; flags: {flags}); 1-min load average "
        f"{m['load_avg_1m_start']} at the start, {m['load_avg_1m_end']} at the end (above ~1 "
        f"means other processes shared the cores). grow_jax: jax {r['ours']['jax']}, flax "
        f"{r['ours']['flax']}. Command: `{r['command']}`.", "",
        f"Same random weights on both sides (one Qwen2-VL written by `hf_io.save_pretrained`; "
        f"text-only peers load its decoder as a Qwen2 folder): `{s['size']}`, hidden "
        f"{s['hidden_size']}, {s['layers']} layers, vocab {s['vocab_size']}, "
        f"{s['text_params_M']}M decoder parameters. generate: {s['batch']} text prompts of "
        f"{s['prompt_tokens'][0]}-{s['prompt_tokens'][1]} random token ids, greedy, exactly "
        f"{s['new_tokens']} new tokens, end-to-end seconds per call (tokens/s = batch x new "
        f"tokens / s). train: one GRPO step (clipped ratio, eps 0.2, token mean over the "
        f"completions, no KL; global-norm clip 1.0; AdamW) on {s['train_batch']} samples "
        f"(prompt + {s['completion_len']} completion tokens). Each peer runs in its own "
        f"virtualenv; calls alternate peer / grow_jax; medians of {s['repeats']} after the "
        f"compile + first call and {s['warmup']} warm-up call(s). Speed-up = peer seconds / "
        "grow_jax seconds.", "",
        "| peer | versions | generate s (peer / ours) | tok/s (peer / ours) | generate "
        "speed-up | greedy tokens equal | train step s (peer / ours) | train speed-up | "
        "first loss (peer / ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    failed = []
    for peer, e in r["peers"].items():
        if "error" in e:
            failed.append((peer, e))
            continue
        v = ", ".join(f"{k} {x}" for k, x in e["versions"].items())
        g, tr = e["generate"], e["train"]
        eq = g["greedy_tokens_equal_frac"]
        fl = tr["first_loss"]
        lines.append(
            f"| {peer} | {v} | {g['s']['peer']} / {g['s']['ours']} | "
            f"{e['tokens_per_s']['peer']} / {e['tokens_per_s']['ours']} | "
            f"{e['speedup_generate']}x | {'n/a' if eq is None else f'{eq:.3f}'} | "
            f"{tr['s']['peer']} / {tr['s']['ours']} | {e['speedup_train']}x | "
            f"{fl['peer']:.6f} / {fl['ours']:.6f} |")
    lines += ["", "What each peer side runs: " + "; ".join(
        f"{p}: {e['what']}" for p, e in r["peers"].items()) + "."]
    for peer, e in r["peers"].items():
        if "error" not in e:
            c = e["generate"]["compile_plus_first_s"], e["train"]["compile_plus_first_s"]
            lines += ["", f"{peer}: compile + first call s (peer / ours): generate "
                      f"{c[0]['peer']} / {c[0]['ours']}, train {c[1]['peer']} / "
                      f"{c[1]['ours']}; weights load {e['load_s']} s. Installed with "
                      f"`{e['install_cmd']}`" + _peer_load(e) + "."]
    if m["load_avg_1m_start"] > m["cpus"] or m["load_avg_1m_end"] > m["cpus"]:
        spread = max((max(v) / min(v) for e in r["peers"].values() if "error" not in e
                      for t in ("generate", "train") for v in e[t]["s_all"].values()),
                     default=1.0)
        lines += ["", (
            "The load average was above the CPU count: other jobs shared the cores and "
            f"repeats of one call varied up to {spread:.1f}x, so these ratios are indicative "
            f"only; rerun `python benchmarks/peers.py --size=100m` on an idle machine for "
            f"the ~100M figures (`{s['size']}` was used here to finish under that load).")]
    lines += ["", (
        "Greedy tokens equal: fraction of the batch x new tokens where the peer's greedy "
        "tokens equal grow_jax's (same weights, f32). First loss: the GRPO loss of the "
        "first step, before any update, on both sides.")]
    for peer in PEERS:
        if peer not in r["peers"]:
            lines += ["", f"**{peer}: not measured in this results file** (run "
                      f"`python benchmarks/peers.py --peers={peer} --size={s['size']}`)."]
    for peer, e in failed:
        error = re.sub(r"[^\s\"]*/(benchmarks/)", r"\1", e["error"].strip())  # no machine paths
        lines += ["", f"**{peer} did not run here.** Command: `{e['install_cmd']}`; error:",
                  "", "```", error, "```"]
    return "\n".join(lines) + "\n"


def _peer_load(e: dict) -> str:
    if "load_avg_1m_start" not in e:  # runs before per-peer load was recorded
        return ""
    return (f"; 1-min load average {e['load_avg_1m_start']} / {e['load_avg_1m_end']} at "
            "its start / end")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peers", default="tunix,easydel", help="comma-separated: " + ",".join(PEERS))
    p.add_argument("--size", default="100m", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=8, help="prompts per generate call")
    p.add_argument("--new_tokens", type=int, default=32)
    p.add_argument("--prompt_min", type=int, default=16)
    p.add_argument("--prompt_max", type=int, default=40)
    p.add_argument("--train_batch", type=int, default=16)
    p.add_argument("--completion_len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
    p.add_argument("--peer_timeout_s", type=float, default=1800,
                   help="longest wait for one answer of a peer worker (load, compile, call)")
    p.add_argument("--no_write", action="store_true", help="print only")
    p.add_argument("--doc_only", action="store_true",
                   help="regenerate the docs section from the stored JSON")
    args = p.parse_args(argv)
    if args.doc_only:
        write_section(SECTION, section(json.loads(RESULTS.read_text())))
        return
    r = run(args)
    print(section(r))
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(r, indent=1) + "\n")
        write_section(SECTION, section(r))


if __name__ == "__main__":
    main()
