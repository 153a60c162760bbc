"""One build for every CPU: the kernels compile for each target on their own, the dispatcher
picks what the CPU can run, and ``FASTRNN_ISA`` forces a lower path or fails clearly.

The per-target parity with the reference is in test_compiled_compiled.py and
test_compiledbptt.py (their ``isa`` fixture); ``.ci/run`` also builds a wheel, installs it in
a fresh virtual environment and runs those tests against it.
"""
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

KERNELS = ROOT / "fastrnn" / "engine" / "kernels"
#: the flags setup.py gives every target's kernels (GCC and Clang), then each target's own
COMMON_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-trapping-math"]
_compiled = pytest.importorskip("fastrnn.engine._compiled", reason="compiled engine not built")
from fastrnn import engine  # noqa: E402  (only reached when the extension is built)
from fastrnn.engine import bptt, gemm, stream  # noqa: E402,F401
from fastrnn.engine import plan as engine_plan  # noqa: E402,F401
from fastrnn.engine.forward import forward as engine_forward  # noqa: E402,F401


def _setup_module():
    """setup.py as a module (its target table), without running setup()."""
    import ast
    tree = ast.parse((ROOT / "setup.py").read_text())
    keep = [n for n in tree.body if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "").endswith("TARGETS") for t in n.targets)]
    ns = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "setup.py", "exec"), ns)
    return ns


def _compilers():
    found = []
    for cc in dict.fromkeys([os.environ.get("CC", "cc"), "gcc", "clang"]):
        if cc and shutil.which(cc):
            found.append(cc)
    return found


needs_sources = pytest.mark.skipif(not (KERNELS / "fr_isa.c").exists(),
                                   reason="needs the source checkout")


@needs_sources
@pytest.mark.skipif(not _compilers(), reason="no C compiler")
@pytest.mark.parametrize("cc", _compilers())
def test_kernels_compile_for_every_target_without_warnings(cc, tmp_path):
    """Each target's translation unit compiles on its own with every warning an error, and
    exports exactly its table (nothing else that two targets could clash on)."""
    ns = _setup_module()
    machine = platform.machine().lower()
    targets = (ns["X86_TARGETS"] if machine in ("x86_64", "amd64")
               else ns["ARM64_TARGETS"] if machine in ("aarch64", "arm64") else ns["OTHER_TARGETS"])
    for name, flags, _msvc in targets:
        obj = tmp_path / f"fr_{name}.o"
        cmd = [cc, *COMMON_FLAGS, "-Wall", "-Wextra", "-Werror", "-c",
               str(KERNELS / "fr_isa.c"), f"-DFR_TARGET={name}", *flags, "-o", str(obj)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        assert run.returncode == 0, " ".join(cmd) + "\n" + run.stderr[-3000:]
        if shutil.which("nm"):
            syms = subprocess.run(["nm", "-g", "--defined-only", str(obj)], capture_output=True,
                                  text=True).stdout.split()
            assert [s for s in syms if s.startswith("fr_")] == [f"fr_kernels_{name}"]
    run = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-c",
                          str(KERNELS / "fr_runtime.c"), "-DFR_HAVE_BASELINE",
                          "-o", str(tmp_path / "rt.o")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


@needs_sources
def test_the_build_does_not_target_the_build_machine():
    text = (ROOT / "setup.py").read_text()
    for flag in ("-march=native", "-mcpu=native", "-mtune=native", "FASTRNN_PORTABLE"):
        assert flag not in text


def test_dispatch_picks_the_best_runnable_set():
    compiled = engine.compiled_isas()
    runnable = engine.supported_isas()
    assert runnable and set(runnable) <= set(compiled)
    assert runnable[-1] in ("baseline", "neon")      # the platform's minimum always runs
    if not os.environ.get("FASTRNN_ISA"):
        assert engine.isa() == runnable[0]
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    has = next((set(line.split(":", 1)[1].split()) for line in lines
                if line.startswith("flags")), None)
    if platform.machine().lower() in ("x86_64", "amd64") and has is not None:
        assert ("avx2" in runnable) == ({"avx2", "fma"} <= has)
        assert ("avx512" in runnable) == ({"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= has)


def test_show_config(capsys):
    import fastrnn
    info = fastrnn.show_config(mode="dicts")
    assert info["isa"] == engine.isa()
    assert info["compiled_isas"] == engine.compiled_isas()
    assert info["threads"] == fastrnn.get_num_threads()
    assert fastrnn.show_config() is None
    out = capsys.readouterr().out
    assert "isa" in out and engine.isa() in out and "compiled_isas" in out
    with pytest.raises(ValueError, match="mode"):
        fastrnn.show_config(mode="yaml")


def _run_with_isa(value):
    code = "import fastrnn; from fastrnn import engine; print(engine.isa())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, FASTRNN_ISA=value), cwd="/")


@pytest.mark.parametrize("name", engine.supported_isas())
def test_fastrnn_isa_forces_each_runnable_set(name):
    run = _run_with_isa(name)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-1] == name


def test_fastrnn_isa_refuses_what_it_cannot_run():
    run = _run_with_isa("sse9")
    assert run.returncode != 0
    assert "FASTRNN_ISA='sse9'" in run.stderr and "not an instruction set of this build" in run.stderr
    for name in set(engine.compiled_isas()) - set(engine.supported_isas()):
        run = _run_with_isa(name)
        assert run.returncode != 0 and "this CPU cannot run it" in run.stderr
    with pytest.raises(ValueError, match="no kernels for 'sse9'"):
        engine.use_isa("sse9").__enter__()


# ---------------------------------------------------------------------------------------------
# Each target's kernel table against plain C loops (tests/engine/kernel_check.c), without Python:
# natively for the x86 targets this CPU runs, and NEON cross-compiled and run under qemu
# ---------------------------------------------------------------------------------------------

def _run_kernel_check(cc, name, flags, tmp_path, runner=(), extra=()):
    exe = tmp_path / f"kernel_check_{name}"
    cmd = [cc, *COMMON_FLAGS, "-Wall", "-Wextra", "-Werror", f"-DFR_TARGET={name}", *flags,
           f"-I{KERNELS}", str(Path(__file__).with_name("kernel_check.c")),
           str(KERNELS / "fr_isa.c"), *extra, "-o", str(exe), "-lm"]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, " ".join(cmd) + "\n" + build.stderr[-3000:]
    run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"{name} kernels" in run.stdout and "0 failed checks" in run.stdout


@needs_sources
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or not _compilers(),
                    reason="x86-64 with a C compiler")
@pytest.mark.parametrize("name", engine.supported_isas() if engine.AVAILABLE else [])
def test_kernel_tables_match_plain_loops(name, tmp_path):
    """The activations (error bounds, NaN in every lane) and the GEMMs (overwrite and
    accumulate, A transposed, dot kernel) of each target this CPU runs, in C alone."""
    flags = {n: f for n, f, _msvc in _setup_module()["X86_TARGETS"]}[name]
    _run_kernel_check(_compilers()[0], name, flags, tmp_path)


@needs_sources
@pytest.mark.skipif(not (shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64")),
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: "
                           "gcc-aarch64-linux-gnu, qemu-user; .ci/run installs them)")
def test_neon_kernels_under_emulation(tmp_path):
    """The NEON kernels (the aarch64 wheels' only target, never built on x86 otherwise):
    cross-compiled as setup.py builds them and run under qemu."""
    flags = dict((n, f) for n, f, _msvc in _setup_module()["ARM64_TARGETS"])["neon"]
    _run_kernel_check("aarch64-linux-gnu-gcc", "neon", flags, tmp_path, runner=("qemu-aarch64",),
                      extra=("-static",))
