"""Compiled (numba) kernels behind qpyr's public functions.

Each submodule imports numba at its top, so it is imported on first use only: ``import qpyr``
never imports numba.
"""
