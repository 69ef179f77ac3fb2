"""benchmarks/peers.py renders its docs section from a stored results JSON (the benchmark
itself needs the peers' virtualenvs and never runs in CI)."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import peers  # noqa: E402


def _stored():
    with open(peers.RESULTS) as f:
        return json.load(f)


def test_section_from_stored_results_is_the_docs_section():
    text = peers.section(_stored())
    assert text.startswith(peers.SECTION + "\n")
    with open(os.path.join(ROOT, "docs", "performance.md")) as f:
        assert text.strip() in f.read()


def test_section_lists_ran_and_failed_peers():
    r = _stored()
    ok = next(iter(r["peers"].values()))
    assert "error" not in ok, "the stored run should hold at least one peer that ran"
    r["peers"]["broken"] = {"install_cmd": "pip install broken==1", "what": "a peer",
                            "error": "install failed:\nNo matching distribution"}
    text = peers.section(r)
    assert "**broken did not run here.**" in text and "No matching distribution" in text
    assert f"{ok['speedup_generate']}x" in text and f"{ok['speedup_train']}x" in text
