"""Plain vectorised PyTorch implementations: the CPU backend and the oracle for every kernel."""
