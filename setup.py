"""Build script: compiles the engine (``fastrnn.engine._compiled``) with its kernels for every target.

Metadata lives in ``pyproject.toml``; this file declares the extension, because it needs
NumPy's headers, OpenMP flags and one compilation of the kernels per instruction set.

The arithmetic kernels (``fastrnn/engine/kernels/fr_isa.c``) are compiled once per target of
the platform with that target's flags (``TARGETS``) and linked into the one extension, which
chooses the best table the CPU can run at import (``fr_runtime.c``).  Nothing depends on the
machine that builds: a source build and a wheel are the same artefact, and run on any CPU of
the platform.
"""
import os
import platform
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = os.path.join("fastrnn", "engine", "kernels")
KERNEL_HEADERS = [os.path.join(KERNELS, h)
                  for h in ("fr_config.h", "fr_kernels.h", "fr_kernels_impl.h")]

# target name -> flags (GCC / Clang, MSVC), best first; "baseline" is the platform's minimum
X86_TARGETS = [
    ("avx512", ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
                "-mprefer-vector-width=512"], ["/arch:AVX512"]),
    ("avx2", ["-mavx2", "-mfma"], ["/arch:AVX2"]),
    ("baseline", [], []),
]
ARM64_TARGETS = [("neon", [], [])]
OTHER_TARGETS = [("baseline", [], [])]


def targets():
    """The kernel targets of the platform being built for."""
    machine = platform.machine().lower()
    if sys.platform == "darwin" and "arm64" in os.environ.get("ARCHFLAGS", ""):
        machine = "arm64"           # cross-building an arm64 wheel on an Intel Mac
    if machine in ("x86_64", "amd64", "x64"):
        return X86_TARGETS
    if machine in ("aarch64", "arm64"):
        return ARM64_TARGETS
    return OTHER_TARGETS


class BuildWithKernels(build_ext):
    """build_ext that first compiles the kernels once per target and links them in."""

    def build_extension(self, ext):
        msvc = self.compiler.compiler_type == "msvc"
        # -ffp-contract=fast: a * b + c as one FMA (ISO C mode would not contract);
        # -fno-trapping-math: the clamps in the activations become vector selects on targets
        # without mask registers (floating-point traps are never enabled by the engine)
        common = (["/O2", "/fp:contract"] if msvc
                  else ["-O3", "-ffp-contract=fast", "-fno-trapping-math"])
        objects = []
        for name, gnu_flags, msvc_flags in targets():
            objects += self.compiler.compile(
                [os.path.join(KERNELS, "fr_isa.c")],
                output_dir=os.path.join(self.build_temp, "kernels", name),
                macros=[("FR_TARGET", name)],
                include_dirs=[KERNELS],
                extra_postargs=common + (msvc_flags if msvc else gnu_flags),
                depends=KERNEL_HEADERS,
            )
            ext.define_macros.append((f"FR_HAVE_{name.upper()}", "1"))
        ext.extra_objects = objects + list(ext.extra_objects or [])
        super().build_extension(ext)


if sys.platform == "win32":
    openmp_compile, openmp_link = ["/openmp"], []
elif sys.platform == "darwin":
    # Apple's clang: OpenMP through libomp (CPPFLAGS / LDFLAGS point at it, see pyproject.toml)
    openmp_compile, openmp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
else:
    openmp_compile, openmp_link = ["-fopenmp"], ["-fopenmp"]

extensions = [
    Extension(
        "fastrnn.engine._compiled",
        ["fastrnn/engine/_compiled.pyx", os.path.join(KERNELS, "fr_runtime.c")],
        include_dirs=[np.get_include(), KERNELS],
        depends=KERNEL_HEADERS + [os.path.join("fastrnn", "engine", f"_{part}.pxi")
                                  for part in ("kernels", "team", "gemm", "forward", "stream")],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=(["-O3"] if sys.platform != "win32" else []) + openmp_compile,
        extra_link_args=openmp_link,
    )
]

setup(
    cmdclass={"build_ext": BuildWithKernels},
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
