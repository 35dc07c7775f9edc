"""Zarr v3 datasets by URL: kinds and schemas, tiers, codecs, checksums and atomic commits.

This package knows Zarr and fsspec, never Dask graphs.
"""

from .codecs import CodecPreset, parse_codec
from .commits import CommitError, CommitInfo, CommitLog, PendingCommit
from .dataset import Dataset, DatasetExistsError, create_dataset, open_dataset
from .integrity import ChunkCorruptionError, NamingCodecPipeline
from .schema import KINDS, ArrayRule, KindSchema, SchemaError, register_kind
from .tiers import TierConfig, TieredStore, flush_all, tier_stats_all
from .urls import S3Options, StoreURL, open_store, parse_url

__all__ = [
    "ArrayRule", "ChunkCorruptionError", "CodecPreset", "CommitError", "CommitInfo", "CommitLog", "Dataset",
    "DatasetExistsError", "NamingCodecPipeline", "KINDS", "KindSchema", "PendingCommit", "S3Options", "SchemaError",
    "StoreURL", "TierConfig", "TieredStore", "create_dataset", "flush_all", "open_dataset", "open_store",
    "parse_codec", "parse_url", "register_kind", "tier_stats_all",
]
