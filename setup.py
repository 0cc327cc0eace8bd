"""Build the Cython hot paths in ``src/aiolit/_fast``; everything else is in pyproject.toml."""

from __future__ import annotations

import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

_sources = sorted(glob.glob(os.path.join("src", "aiolit", "_fast", "*.pyx")))
extensions = [
    Extension(
        "aiolit._fast." + os.path.splitext(os.path.basename(src))[0],
        [src],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for src in _sources
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
