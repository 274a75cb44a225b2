"""The one thing pyproject.toml cannot declare stably: the compiled fast-path check.

It needs a C compiler and the Python headers (gcc and python3-dev on Debian); `make venv` and the
flow image's pip install build it. The metadata is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "flows.transform._fastcheck",
            sources=["flows/transform/_fastcheck.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
