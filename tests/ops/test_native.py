"""The native CPU line kernel (spatialrec.ops.native): the fused scan with it against the same scan
with torch's element-wise ops and against the naive per-pixel oracle, gradcheck, its float32
exp, and the build: the option's three values, a failed build, the cache.

The rest of the suite runs the fused backend with the kernel too (``cpu_kernel="auto"`` is the
default and the kernel builds wherever a C++ compiler is found); these tests pin each path."""

from __future__ import annotations

import subprocess

import pytest
import torch

from spatialrec import options
from spatialrec.ops import directional_gru_scan, directional_gru_scan_sequence, native

from .naive import naive_scan, random_params

needs_compiler = pytest.mark.skipif(native._compiler() is None, reason="no C++ compiler: the native kernel cannot be built here")


@pytest.fixture
def fresh_native(tmp_path, monkeypatch):
    """The kernel forgotten, built into an empty cache folder; forgotten again afterwards."""
    native._forget()
    with options.override(cache_dir=tmp_path):
        yield tmp_path
    native._forget()


def _sequence(x, params, directions, carry, kernel):
    with options.override(cpu_kernel=kernel):
        y = directional_gru_scan_sequence(x, params, directions, backend="fused", carry=carry)
        wrt = [x, *(t for p in params for t in p)]
        grads = torch.autograd.grad(y, wrt, torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y))
    return y, grads


def _make(shape, n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
    params = [tuple(t.requires_grad_() for t in random_params(shape[1], g, dtype)) for _ in range(n)]
    return x, params


@needs_compiler
@pytest.mark.parametrize("gates", ["save", "recompute"])
@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape,directions",
    [((2, 3, 5, 6), ("right", "down")), ((1, 4, 6, 3), ("up", "left", "down")), ((2, 2, 1, 4), ("down",)), ((1, 3, 4, 1), ("down", "right"))],
)
def test_native_matches_torch_ops(shape, directions, dtype, carry, gates) -> None:
    x, params = _make(shape, len(directions), dtype)
    with options.override(fused_gates=gates):
        want_y, want_g = _sequence(x, params, directions, carry, "torch")
        got_y, got_g = _sequence(x, params, directions, carry, "native")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_y, want_y, **tol)
    for got, want in zip(got_g, want_g):
        torch.testing.assert_close(got, want, **tol)


@needs_compiler
@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("direction", ["right", "left", "down", "up"])
def test_native_matches_naive_oracle(direction: str, carry: str) -> None:
    x, (params,) = _make((2, 3, 4, 5), 1, torch.float64, seed=5)
    with options.override(cpu_kernel="native"):
        got = directional_gru_scan(x, *params, direction, backend="fused", carry=carry)
    torch.testing.assert_close(got, naive_scan(x, *params, direction, carry=carry), rtol=1e-12, atol=1e-12)


@needs_compiler
@pytest.mark.parametrize("gates", ["save", "recompute"])
@pytest.mark.parametrize("carry", ["prior", "line"])
def test_native_gradcheck(carry: str, gates: str) -> None:
    x, params = _make((2, 2, 3, 4), 2, torch.float64, seed=1)
    flat = [t for p in params for t in p]

    def fn(x, *flat):
        ps = [tuple(flat[4 * k : 4 * k + 4]) for k in range(2)]
        return directional_gru_scan_sequence(x, ps, ("right", "up"), backend="fused", carry=carry)

    with options.override(cpu_kernel="native", fused_gates=gates):
        assert torch.autograd.gradcheck(fn, (x, *flat))


@needs_compiler
def test_float32_sigmoid_is_accurate_everywhere() -> None:
    """The float32 kernel's own exp, through the gates it writes: r and z are sigmoid of their
    pre-activations, compared with torch's sigmoid in float64 over [-100, 100]."""
    kernel = native.line_kernel(torch.float32, torch.device("cpu"))
    assert kernel is not None
    s, m = 8, 4096
    v = torch.linspace(-100, 100, m * 2 * s, dtype=torch.float64).view(m, 2 * s)
    g = torch.zeros(m, 3 * s)
    g[:, s:] = v.float()
    kernel.forward_line(g, torch.zeros(m, s), None, 0, None, 0, None, 1, m, s)
    want = torch.sigmoid(v.float().double())
    got = g[:, s:].double()
    assert ((got - want).abs() / want.clamp_min(1e-30)).max() < 4e-7  # a few ulp, relative, down to sigmoid(-87)
    assert (got[v > -87] > 0).all() and (got <= 1).all()
    # n = 2 sigmoid(2 v) - 1 = tanh(v) with no hidden-state term: g's n columns hold 2 v
    x = torch.linspace(-20, 20, m * s, dtype=torch.float64).view(m, s)
    g = torch.zeros(m, 3 * s)
    g[:, :s] = (2 * x).float()
    kernel.forward_line(g, torch.zeros(m, s), None, 0, None, 0, None, 1, m, s)
    assert (g[:, :s].double() - torch.tanh(x.float().double())).abs().max() < 3e-7


def test_option_torch_never_builds(fresh_native) -> None:
    with options.override(cpu_kernel="torch"):
        x, params = _make((1, 2, 3, 3), 1, torch.float32)
        directional_gru_scan_sequence(x, params, ("down",), backend="fused")
        assert native.line_kernel(torch.float32, torch.device("cpu")) is None
    assert native.status()["state"] == "not built yet"
    assert not any(fresh_native.rglob("*.so"))


def test_other_dtypes_and_devices_use_torch_ops() -> None:
    assert native.line_kernel(torch.bfloat16, torch.device("cpu")) is None
    assert native.line_kernel(torch.float32, torch.device("meta")) is None


def test_failed_build_falls_back_under_auto_and_raises_under_native(fresh_native, monkeypatch) -> None:
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with options.override(cpu_kernel="auto"):
        assert native.line_kernel(torch.float32, torch.device("cpu")) is None
        x, params = _make((1, 2, 3, 3), 1, torch.float32)
        y, _ = _sequence(x, params, ("right",), "prior", "auto")  # still runs, with torch's ops
        assert y.shape == x.shape
    status = native.status()
    assert status["state"] == "failed" and "false" in (status["reason"] or "")
    with options.override(cpu_kernel="native"), pytest.raises(RuntimeError, match="could not be built"):
        native.line_kernel(torch.float32, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="could not be built"):
        native.build()


@needs_compiler
def test_build_is_cached_and_reused(fresh_native, monkeypatch) -> None:
    path = native.build()
    assert path.parent == fresh_native / "native" and path.exists()
    status = native.status()
    assert status.pop("openmp").startswith(("yes", "no: "))
    assert status == {"option": options.get_cpu_kernel(), "state": "loaded", "library": str(path), "reason": None}
    native._forget()

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"compiled again: {args}")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native.build() == path  # found in the cache, not compiled again
    # No temporary files left (notes of tiers the compiler refused, e.g. -fopenmp without an
    # OpenMP runtime, may stay beside the library).
    assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".failed")] == [path.name]


@needs_compiler
def test_option_native_from_the_environment(option_env) -> None:
    option_env("cpu_kernel", "native")
    assert options.get_cpu_kernel() == "native"
    assert native.line_kernel(torch.float64, torch.device("cpu")) is not None
    option_env("cpu_kernel", "fast")
    with pytest.raises(ValueError, match="SPATIALREC_CPU_KERNEL"):
        native.line_kernel(torch.float64, torch.device("cpu"))


@pytest.fixture
def threads():
    """Set torch's thread count for a test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@needs_compiler
@pytest.mark.parametrize("carry", ["prior", "line"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_threads_agree_with_one_thread(threads, dtype, carry) -> None:
    """Lines long enough to be split over threads (B W S = 2 * 70 * 64 values for `down`, above the
    kernel's 8192): with 3 threads (OpenMP builds split each line's rows; a build without OpenMP
    runs them on one) the values of one thread (to rounding: torch's GEMMs may split their sums
    differently with more threads), and the same bits on every run with 3."""
    x, params = _make((2, 64, 9, 70), 2, dtype, seed=3)
    with options.override(fused_gates="save"):
        threads(1)
        want_y, want_g = _sequence(x, params, ("down", "left"), carry, "native")
        threads(3)
        got_y, got_g = _sequence(x, params, ("down", "left"), carry, "native")
        again_y, again_g = _sequence(x, params, ("down", "left"), carry, "native")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_y, want_y, **tol)
    assert torch.equal(got_y, again_y)
    for got, want, again in zip(got_g, want_g, again_g):
        torch.testing.assert_close(got, want, **tol)
        assert torch.equal(got, again)  # deterministic for a given thread count


@needs_compiler
def test_build_without_openmp_runs_on_one_thread(fresh_native, monkeypatch, threads) -> None:
    """The tiers without -fopenmp (a compiler without an OpenMP runtime ends there): status says
    so, and the scan gives what the OpenMP build gives."""
    x, params = _make((1, 32, 5, 300), 1, torch.float64, seed=2)
    threads(2)
    want_y, want_g = _sequence(x, params, ("down",), "line", "native")
    native._forget()
    monkeypatch.setattr(native, "_FLAG_TIERS", tuple(t for t in native._FLAG_TIERS if "-fopenmp" not in t))
    got_y, got_g = _sequence(x, params, ("down",), "line", "native")
    assert native.status()["openmp"] == "no: built without OpenMP"
    assert native.line_kernel(torch.float64, torch.device("cpu")).threads() == 1
    torch.testing.assert_close(got_y, want_y, rtol=1e-13, atol=1e-13)
    for got, want in zip(got_g, want_g):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


@needs_compiler
def test_failed_tier_is_remembered(fresh_native, monkeypatch) -> None:
    """A tier whose compile fails leaves a ``.failed`` note beside the cache; later processes skip
    it instead of compiling it again, and build the next tier (here found in the cache)."""
    bad = native._BASE_FLAGS + ("-fthis-flag-does-not-exist",)
    monkeypatch.setattr(native, "_FLAG_TIERS", (bad, native._BASE_FLAGS))
    path = native.build()
    notes = [p for p in path.parent.iterdir() if p.name.endswith(".failed")]
    assert len(notes) == 1 and "this-flag-does-not-exist" in notes[0].read_text()
    native._forget()

    def no_compiler(*args, **kwargs):
        raise AssertionError(f"compiled again: {args}")

    monkeypatch.setattr(subprocess, "run", no_compiler)
    assert native.build() == path


@pytest.mark.parametrize("kernel", ["native", "torch"])
def test_bench_layer_probe_runs(kernel, capsys) -> None:
    """``benchmarks/bench_layer.py`` (the A/B probe behind docs/kernels.md's thread table) runs and
    prints one time in milliseconds."""
    import importlib.util
    from pathlib import Path

    if kernel == "native" and native._compiler() is None:
        pytest.skip("no C++ compiler")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_layer.py"
    spec = importlib.util.spec_from_file_location("bench_layer_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        with options.override(cpu_kernel=options.get_cpu_kernel()):  # the probe sets the option
            assert bench.main(["small", "--steps", "1", "--cpu-kernel", kernel]) == 0
    finally:
        torch.set_num_threads(threads)
    assert float(capsys.readouterr().out.strip()) > 0


@needs_compiler
def test_openmp_only_on_torchs_runtime(fresh_native, monkeypatch, threads) -> None:
    """An OpenMP build splits lines only where it shares torch's runtime (one runtime mapped in the
    process); with two (a wheel shipping a renamed copy) it stays on one thread and says why."""
    path = native.build()
    threads(2)
    lib = native._library
    if not lib.spatialrec_native_openmp():
        pytest.skip(f"{path} was built without OpenMP")
    monkeypatch.setattr(native, "_openmp_runtimes", lambda: {"/torch/lib/libgomp-a1b2.so.1", "/usr/lib/libgomp.so.1"})
    assert native.LineKernel(lib, torch.float32).threads() == 1
    assert native.status()["openmp"].startswith("no: 2 OpenMP runtimes")
    monkeypatch.setattr(native, "_openmp_runtimes", lambda: {"/torch/lib/libgomp.so.1"})
    assert native.LineKernel(lib, torch.float32).threads() == 2
    assert native.status()["openmp"] == "yes"
