"""The README's Python snippet runs as written on a tiny HF folder (paths substituted)."""

import os
import re

import numpy as np
from flax import nnx

from grow_jax.models import hf_io
from grow_jax.models.qwen2_vl.config import Qwen2VLConfig
from grow_jax.models.qwen2_vl.modeling import Qwen2VL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_snippet_runs(tmp_path):
    from test_hf_io import HF_TINY  # tests/ is on sys.path: patch 14, like Qwen2-VL

    with open(os.path.join(ROOT, "README.md")) as f:
        (code,) = re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)
    config = Qwen2VLConfig.from_hf(HF_TINY)
    folder, out = tmp_path / "hf", tmp_path / "out"
    hf_io.save_pretrained(Qwen2VL(config, rngs=nnx.Rngs(0)), folder, config=config)
    assert code.count('"path/to/Qwen2-VL-folder"') == 1 and code.count('"out/"') == 1
    code = code.replace('"path/to/Qwen2-VL-folder"', repr(str(folder)))
    code = code.replace('"out/"', repr(str(out)))
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the documented example
    assert ns["logits"].shape == (1, len(ns["ids"]), config.text.vocab_size)
    (toks,), (lps,) = ns["tokens"], ns["logprobs"]
    assert 1 <= len(toks) <= 16 and len(lps) == len(toks) and np.all(np.asarray(lps) <= 0)
    assert [len(a) for a in ns["adv"]] == [3, 2]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
