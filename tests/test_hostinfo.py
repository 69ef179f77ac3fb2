"""The host CPU's name and ISA as reports and benchmark files record it."""

from grow_jax.hostinfo import cpu_info, cpu_label


def _cpuinfo(tmp_path, model, flags):
    core = f"processor\t: {{}}\nmodel name\t: {model}\nflags\t\t: fpu sse2 {flags}\n\n"
    path = tmp_path / "cpuinfo"
    path.write_text(core.format(0) + core.format(1))
    return str(path)


def test_three_cpus_seen_here(tmp_path):
    zen3 = cpu_info(_cpuinfo(tmp_path, "AMD EPYC", "avx avx2 fma"))
    assert zen3 == {"model": "AMD EPYC", "flags": ["avx2"]}
    assert cpu_label(zen3) == "AMD EPYC, AVX2 (no AVX-512)"
    zen4 = cpu_info(_cpuinfo(tmp_path, "AMD EPYC", "avx2 avx512f avx512_vnni avx512_bf16"))
    assert zen4["flags"] == ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]
    assert cpu_label(zen4) == "AMD EPYC, AVX-512"
    xeon = cpu_info(_cpuinfo(tmp_path, "Intel(R) Xeon(R) Processor",
                             "avx2 avx512f amx_bf16 amx_tile"))
    assert cpu_label(xeon) == "Intel(R) Xeon(R) Processor, AVX-512 + AMX"


def test_no_cpuinfo(tmp_path):
    """Elsewhere (macOS, say): the platform's name, no flags, no ISA claimed."""
    cpu = cpu_info(str(tmp_path / "missing"))
    assert cpu["flags"] == [] and cpu_label(cpu) == cpu["model"]
