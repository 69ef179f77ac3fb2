"""What the host CPU is, for reports and benchmark files: its model name and the vector ISA
flags that decide XLA's CPU code (two CPUs of one model name can differ there, and a run's
floats with them)."""

from __future__ import annotations

import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """{"model": model name, "flags": the ISA_FLAGS it has} (from /proc/cpuinfo on Linux;
    the platform's processor name and no flags elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name":
                model = val.strip()
            elif key.strip() == "flags":
                flags = set(val.split())
                break  # the first core's; every core of a host has the same
    except OSError:
        pass
    return {"model": model, "flags": [f for f in ISA_FLAGS if f in flags]}


def cpu_label(cpu: dict | None = None) -> str:
    """The model name with its widest vector ISA: "AMD EPYC, AVX2 (no AVX-512)"."""
    cpu = cpu or cpu_info()
    if "avx512f" in cpu["flags"]:
        return cpu["model"] + (", AVX-512 + AMX" if "amx_tile" in cpu["flags"] else ", AVX-512")
    return cpu["model"] + (", AVX2 (no AVX-512)" if "avx2" in cpu["flags"] else "")
