"""CuPy backend: thin launchers for the CUDA C kernels in the top-level ``kernels/`` folder.

Kernels are compiled at first use with NVRTC (``cupy.RawModule``), run on torch's current
stream and see torch tensors zero-copy through DLPack. CuPy is imported lazily, so importing
fastmix never requires it; the torch ops in ``fastmix.ops.copy_paste`` route CUDA tensors here.
"""
