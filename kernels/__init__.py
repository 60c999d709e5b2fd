"""CUDA C sources of fastmix's CuPy kernels.

This folder is shipped inside the wheel as the data package ``fastmix.kernels`` (see the
package-dir mapping in pyproject.toml); ``fastmix.backends.cupy._runtime`` loads the ``.cu``
files from there, or from this folder when fastmix runs from a source checkout.
"""
