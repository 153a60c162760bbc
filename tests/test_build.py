"""The portable build (``FASTRNN_PORTABLE=1``: no ``-march=native``) compiles and computes.

The vector kernels are written for the widest registers the compiler targets; a build for a
baseline x86-64 (SSE2) must still compile (a register constraint that only fits AVX-512 once
broke it) and give the reference's numbers.  The extension is built in a temporary copy of this checkout's sources
and exercised in a separate process.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("Cython", reason="Cython is needed to build the extension")
if not (ROOT / "fastrnn" / "_forward.pyx").exists() or not (ROOT / "setup.py").exists():
    pytest.skip("needs the source checkout", allow_module_level=True)
if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
    pytest.skip("no C compiler", allow_module_level=True)

CHECK = """
import numpy as np
import fastrnn
from fastrnn import _engine, _forward, reference
assert _forward.__file__.startswith({pkg!r}), _forward.__file__
rng = np.random.default_rng(0)
for cell in ("lstm", "gru", "rnn_tanh"):
    for dtype in (np.float32, np.float64):
        G = reference.GATES[cell]
        w = {{"weight_ih_l0": (0.3 * rng.standard_normal((G * 70, 33))).astype(dtype),
             "weight_hh_l0": (0.3 * rng.standard_normal((G * 70, 70))).astype(dtype)}}
        x = rng.standard_normal((5, 9, 33)).astype(dtype)
        lengths = np.array([9, 3, 7, 1, 9], dtype=np.int64)
        want = reference.forward(cell, x, w, lengths=lengths)[0]
        got = _engine.forward(cell, x, w, lengths=lengths)[0]
        tol = 1e-5 if dtype == np.float32 else 1e-10
        assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max()), (cell, dtype)
a = rng.standard_normal((130, 257)).astype(np.float32)
b = rng.standard_normal((257, 67)).astype(np.float32)
assert np.allclose(_engine.matmul(a, b), a @ b, rtol=1e-4, atol=1e-3)
print("ok")
"""


def test_portable_build_compiles_and_matches_reference(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "setup.py", src)
    shutil.copy(ROOT / "pyproject.toml", src)
    pkg = src / "fastrnn"
    shutil.copytree(ROOT / "fastrnn", pkg,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "*.c", "__pycache__"))
    env = dict(os.environ, FASTRNN_PORTABLE="1")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                           cwd=src, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    run = subprocess.run([sys.executable, "-c", CHECK.format(pkg=str(pkg))],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(src)))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
