"""Deduplication stages: exact (normalized text hash) and MinHash-LSH near-dedup."""

from data_prep.dedup.exact import ExactDedupFilter, normalized_text_hash
from data_prep.dedup.minhash import (
    MinHashConfig,
    MinHashDedupFilter,
    cluster,
    compute_signatures,
    minhash_signatures,
)

__all__ = ["ExactDedupFilter", "MinHashConfig", "MinHashDedupFilter", "cluster", "compute_signatures",
           "minhash_signatures", "normalized_text_hash"]
