"""Regenerates docs/performance.md's "Accelerators (on paper)" section: the 7B train
step's MFU bound on a v5p slice and on 8x H100 / H200, and the decode tokens/s bound per
chip, from `grow_jax.roofline` (so no figure there is typed by hand).

    python scripts/roofline_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_section  # noqa: E402  (benchmarks/_common.py)

from grow_jax import roofline  # noqa: E402


def main() -> None:
    body = roofline.section()
    write_section(body.splitlines()[0], body)


if __name__ == "__main__":
    main()
