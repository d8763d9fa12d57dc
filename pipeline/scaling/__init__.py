"""Scaling laws from sweeps: fit L(N, D) (approach 3) and IsoFLOP optima (approach 2)."""
