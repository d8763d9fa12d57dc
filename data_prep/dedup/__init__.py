"""Deduplication across a whole run: per-task keys -> one cluster task -> per-task removal.

``keys`` hashes each filtered document (folded text, URL, MinHash bands); ``removal`` decides
over every task at once and drops what it decided; ``minhash`` is the near-duplicate algorithm.
"""
