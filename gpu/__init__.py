"""gpu: the CuPy backend and multi-GPU placement.

Not built yet: see the gpu issue. ``import gpu`` works without CuPy and without a GPU.
"""
