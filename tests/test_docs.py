"""Docs speak in repository-relative commands and show current signatures."""

import inspect
import os
import re
import subprocess

from grow_jax.models import hf_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _markdown_files():
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True)
    files = out.stdout.split() if out.returncode == 0 else []
    return files or [os.path.relpath(os.path.join(d, f), ROOT)
                     for d, _, fs in os.walk(ROOT) for f in fs if f.endswith(".md")]


def test_docs_have_no_paths_of_one_machine():
    bad = []
    for rel in _markdown_files():
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if re.search(r"(?<![\w.])/(work|home|Users|root)/", line):
                    bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "absolute paths of a machine in docs:\n" + "\n".join(bad)


def test_architecture_hf_io_signatures_are_current():
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    for fn in (hf_io.load_pretrained, hf_io.save_pretrained):
        (shown,) = re.findall(rf"`{fn.__name__}\((.*?)\)", text)
        names = [p.strip().split("=")[0] for p in shown.split(",") if p.strip() not in ("*",)]
        assert names == list(inspect.signature(fn).parameters), (fn.__name__, shown)
