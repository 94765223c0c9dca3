"""Ahead-of-time compilation of the Triton kernels for real NVIDIA targets, on the CPU.

The default run compiles a representative subset (the paper's state size, whose tiles are the
largest the launcher chooses; float32 exact and bfloat16 tensor-core modes; 2D and 3D; sm_80 and
sm_90); ``-m slow`` compiles the full matrix (every kernel, state size 16-256, float32 / tf32 /
bfloat16 / float16, sm_80, sm_90 and sm_100 when the installed Triton knows it). Triton's own
cache (``~/.triton/cache``) makes repeated runs fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is not installed (pip install 'spatialrec[triton]')")

from spatialrec.ops import aot  # noqa: E402

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning


def _check(results):
    assert results
    problems = {f"{r.job.name} {r.job.spatial_dims}D {r.job.dtype} S={r.job.state_sizes} sm_{r.job.arch}": r.problems for r in results if r.problems}
    assert not problems, "\n" + aot.format_table(results)


def test_representative_subset_compiles_within_resources():
    results = aot.compile_matrix(archs=(80, 90), dtypes=("float32", "bfloat16"), state_sizes=(150,), spatial_dims=(2, 3), kernels=("_fwd_line", "_bwd_gates_line", "_bwd_prev_line"), workers=2)
    assert {r.job.arch for r in results} == {80, 90}
    # archs x dtypes x dims x (three kernels + the carry="line" variants of the two with a LINE
    # constexpr) = 40. Per-kernel warps (each kernel its own launch config) add no job here: with
    # one state size every (kernel, dims, dtype, arch, line) is one job whatever its config.
    assert len(results) == 2 * 2 * 2 * (3 + 2)
    assert {r.job.line for r in results if r.job.kernel == "_bwd_gates_line"} == {False, True}
    assert {r.job.line for r in results if r.job.kernel == "_fwd_line"} == {False, True}
    _check(results)
    for r in results:
        assert 0 < r.shared <= aot.SHARED_LIMITS[r.job.arch]
        assert 0 < r.registers <= aot.MAX_REGISTERS - aot.REGISTER_HEADROOM


@pytest.mark.slow
def test_full_matrix_compiles_within_resources():
    archs = aot.supported_archs((80, 90, 100))
    assert {80, 90} <= set(archs)
    _check(aot.compile_matrix(archs=archs, workers=os.cpu_count() or 1))


def test_matrix_covers_every_launcher_choice():
    mod = aot.kernel_module()
    todo = aot.jobs(archs=(80,), dtypes=aot.DTYPES, state_sizes=aot.STATE_SIZES, spatial_dims=(2, 3))
    covered = {(j.kernel, j.spatial_dims, j.dtype, s) for j in todo for s in j.state_sizes}
    assert len(covered) == len(mod.KERNELS) * 2 * len(aot.DTYPES) * len(aot.STATE_SIZES)
    # The job's configuration is the one the launcher picks for a long line.
    for j in todo:
        for s in j.state_sizes:
            mode = {"float32": mod.IEEE, "float32-tf32": mod.TF32, "bfloat16": mod.BF16, "float16": mod.FP16}[j.dtype]
            assert mod.launch_config(aot.LINE_POSITIONS, s, mode, 3 ** (j.spatial_dims - 1), j.kernel) == j.config


def test_the_check_flags_resource_violations():
    job = aot.jobs(archs=(80,), dtypes=("float32",), state_sizes=(150,), spatial_dims=(2,), kernels=("_fwd_line",))[0]
    assert aot.CompileResult(job, True, shared=1024, registers=128, local=0).problems == []
    assert "shared memory" in aot.CompileResult(job, True, shared=200 * 1024, registers=128).problems[0]
    assert aot.CompileResult(job, True, shared=1024, registers=168, local=24).problems == []  # a stack frame alone is fine
    # Within REGISTER_HEADROOM of the cap: one compiler version away from spilling (254 under
    # Triton 3.9 spilled under 3.8).
    assert "registers" in aot.CompileResult(job, True, shared=1024, registers=aot.MAX_REGISTERS - aot.REGISTER_HEADROOM + 1).problems[0]
    assert aot.CompileResult(job, True, shared=1024, registers=aot.MAX_REGISTERS - aot.REGISTER_HEADROOM).problems == []
    assert "spill" in aot.CompileResult(job, True, shared=1024, registers=255, local=64, spill_stores=64).problems[0]
    assert "compile failed" in aot.CompileResult(job, False, error="boom").problems[0]
    assert "| _fwd_line | 2D | float32 |" in aot.format_table([aot.CompileResult(job, True, 1024, 100, 0)])


def test_a_failed_compile_is_reported_not_raised():
    # sm_10 does not exist: the toolchain fails, and the failure comes back as a result row.
    results = aot.compile_matrix(archs=(10,), dtypes=("float32",), state_sizes=(16,), spatial_dims=(2,), kernels=("_fwd_line",), workers=1)
    assert len(results) == 2  # carry="prior" and carry="line"
    for res in results:
        assert not res.ok and res.error
        assert res.problems[0].startswith("compile failed")


def test_compile_job_refuses_interpreted_kernels(monkeypatch):
    mod = aot.kernel_module()
    monkeypatch.setattr(aot, "_interpreted", lambda m: True)
    job = aot.jobs(archs=(80,), dtypes=("float32",), state_sizes=(16,), spatial_dims=(2,), kernels=("_fwd_line",))[0]
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.compile_job(job)
    assert mod.KERNELS


def test_parse_arch():
    assert [aot.parse_arch(a) for a in ("sm_80", "90", "sm_90a", "SM_100")] == [80, 90, 90, 100]
    with pytest.raises(ValueError, match="arch='ampere'"):
        aot.parse_arch("ampere")


def test_gpu_check_compile_only_and_cpu_parts(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import gpu_check

    out = tmp_path / "check.json"
    rc = gpu_check.main(["--compile-only", "--arch", "sm_80", "--dtypes", "float32", "--state-sizes", "150", "--dims", "2", "--workers", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "| _fwd_line | 2D | float32 | 150 |" in text and "5/5 pass" in text
    assert len(json.loads(out.read_text())["compile"]) == 5  # two kernels in both carry variants
    # The correctness and timing parts on the CPU, tiny sizes, fused only.
    monkeypatch_env = os.environ.pop("TRITON_INTERPRET", None)
    try:
        rc = gpu_check.main(["--device", "cpu", "--tiny", "--repeats", "1", "--warmup", "0", "--json", str(out)])
    finally:
        if monkeypatch_env is not None:
            os.environ["TRITON_INTERPRET"] = monkeypatch_env
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["correctness"]} == {"fused"}
    assert all(r["ok"] for r in report["correctness"])
    assert {r["case"] for r in report["timing"]} == {"naive", "fused"}
