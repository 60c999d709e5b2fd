"""Public operators: each draws its random parameters once, then calls deterministic kernels."""
