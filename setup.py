"""The optional C kernels of the prior (dqcodec/_native.c). Everything else is in pyproject.toml.

`optional=True`: without a C compiler the package still installs, and the prior runs its
reference path in torch (the same integers, slower)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dqcodec._native",
            ["dqcodec/_native.c"],
            # no fused multiply-add: the nearest-code search rounds every step, as torch does
            extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
