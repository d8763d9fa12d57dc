"""Writers: the documents that survive prep, in the formats DESIGN §4 fixes."""

from data_prep.writers.parquet import SCHEMA, ParquetWriter

__all__ = ["SCHEMA", "ParquetWriter"]
