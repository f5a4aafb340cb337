"""Builds the LD_PRELOAD connect shim (jail/shim/shim.c) into the package at install time, so no
compiler is needed at run time. Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jail.shim.boundary_shim",
            sources=["jail/shim/shim.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing"],
            libraries=["dl"],
            # without a compiler boundary still installs; landjail then runs without the shim (fail closed)
            optional=True,
        )
    ]
)
