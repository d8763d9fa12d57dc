"""Deduplication stages: exact (normalized text hash) now; MinHash near-dedup later."""

from data_prep.dedup.exact import ExactDedupFilter, normalized_text_hash

__all__ = ["ExactDedupFilter", "normalized_text_hash"]
