"""Datasets: Zarr v3 groups of a known kind, opened by URL, through tiers and checksums."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .arrays import create_named_array
from .codecs import CodecPreset
from .commits import CommitLog
from .schema import SCHEMA_VERSION, KindSchema, check_dataset
from .tiers import TierConfig, TieredStore
from .urls import S3Options, StoreURL, open_store, parse_url

__all__ = ["Dataset", "DatasetExistsError", "open_dataset", "create_dataset"]

warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr", category=UserWarning)


class DatasetExistsError(FileExistsError):
    """``create`` found a dataset already at the URL and ``overwrite`` was not given."""


def _stack(url: StoreURL, tiers: TierConfig | None, s3: S3Options | None, read_only: bool) -> Store:
    store = open_store(url, read_only=read_only, s3=s3)
    return TieredStore(store, tiers) if tiers is not None else store


def _group_exists(store: Store) -> bool:
    try:
        zarr.open_group(store, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):
        return False
    return True


class Dataset:
    """A neurochunk dataset: a Zarr v3 group with a ``neurochunk`` attribute block.

    Use :meth:`create` and :meth:`open` (or :func:`create_dataset` /
    :func:`open_dataset`) rather than the constructor.

    Attributes
    ----------
    url
        Where the dataset lives.
    group
        The root ``zarr.Group`` (reads and writes go through the tiers, if any).
    """

    def __init__(self, url: StoreURL, store: Store, group: zarr.Group, schema: KindSchema | None,
                 s3: S3Options | None = None) -> None:
        self.url, self.store, self.group, self.schema = url, store, group, schema
        self._s3 = s3

    # -- construction --------------------------------------------------------------
    @classmethod
    def create(cls, url: str | os.PathLike[str] | StoreURL, kind: str, *, attrs: Mapping[str, Any] | None = None,
               tiers: TierConfig | None = None, s3: S3Options | None = None, overwrite: bool = False,
               root_attrs: Mapping[str, Any] | None = None) -> Dataset:
        """Create an empty dataset of ``kind`` at ``url``.

        Parameters
        ----------
        url
            Local path, ``file://``, ``memory://`` or ``s3://bucket/prefix``.
        kind
            One of :data:`neurochunk.stores.schema.KINDS`.
        attrs
            Extra fields of the ``neurochunk`` attribute block (kind-specific).
        root_attrs
            Other root attributes (for example OME-Zarr's ``ome`` block).
        overwrite
            Replace a dataset already at ``url``; otherwise that is an error.
        """
        from .schema import KINDS

        if kind not in KINDS:
            raise ValueError(f"unknown dataset kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        loc = parse_url(url)
        store = _stack(loc, tiers, s3, read_only=False)
        if not overwrite and _group_exists(store):
            raise DatasetExistsError(f"a dataset already exists at {loc}; pass overwrite=True to replace it")
        block = {"kind": kind, "schema_version": SCHEMA_VERSION, **dict(attrs or {})}
        all_attrs = {**dict(root_attrs or {}), "neurochunk": block}
        group = zarr.open_group(store, mode="w", zarr_format=3, attributes=all_attrs)
        return cls(loc, store, group, KINDS[kind], s3)

    @classmethod
    def open(cls, url: str | os.PathLike[str] | StoreURL, *, kind: str | None = None, mode: str = "r",
             tiers: TierConfig | None = None, s3: S3Options | None = None) -> Dataset:
        """Open a dataset and check its schema.

        Parameters
        ----------
        kind
            If given, the dataset must be of this kind.
        mode
            ``"r"`` read-only or ``"r+"`` read-write.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        loc = parse_url(url)
        store = _stack(loc, tiers, s3, read_only=mode == "r")
        try:
            group = zarr.open_group(store, mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.NodeNotFoundError) as exc:
            raise FileNotFoundError(f"no dataset at {loc}: no Zarr v3 group there") from exc
        ds = cls(loc, store, group, None, s3)
        ds.schema = ds.validate(kind)
        return ds

    # -- schema --------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """The ``neurochunk`` attribute block."""
        return dict(self.group.attrs.get("neurochunk") or {})

    @property
    def kind(self) -> str:
        return str(self.attrs.get("kind"))

    def update_attrs(self, **fields: Any) -> None:
        """Merge ``fields`` into the ``neurochunk`` attribute block."""
        self.group.attrs["neurochunk"] = {**self.attrs, **fields}

    def array_meta(self) -> dict[str, dict[str, Any]]:
        """Shape, dtype and dimension names of each root array (metadata only)."""
        out = {}
        for name, arr in self.group.arrays():
            out[name] = {"shape": tuple(arr.shape), "dtype": np.dtype(arr.dtype).str,
                         "dims": tuple(arr.metadata.dimension_names or ())}
        return out

    def validate(self, kind: str | None = None) -> KindSchema:
        """Check the dataset against its kind's schema; raise :class:`SchemaError`."""
        block = self.attrs
        if "ome" in self.group.attrs:
            block = {**block, "_ome": self.group.attrs["ome"]}
        return check_dataset(str(self.url), block, self.array_meta(), expect_kind=kind)

    # -- arrays --------------------------------------------------------------------
    def create_array(self, name: str, shape: Sequence[int], dtype: Any, *, chunks: Sequence[int],
                     dims: Sequence[str], codec: str | CodecPreset | None = None, fill_value: Any = 0,
                     shards: Sequence[int] | None = None, attrs: Mapping[str, Any] | None = None,
                     overwrite: bool = False) -> zarr.Array:
        """Create an array with named dimensions and a codec preset; see :func:`create_named_array`."""
        return create_named_array(self.group, str(self.url), name, shape, dtype, chunks=chunks, dims=dims,
                                  codec=codec, fill_value=fill_value, shards=shards, attrs=attrs,
                                  overwrite=overwrite)

    def __getitem__(self, name: str) -> zarr.Array:
        try:
            node = self.group[name]
        except KeyError:
            raise KeyError(f"dataset {self.url} has no array {name!r}; it has {sorted(self.names)}") from None
        if not isinstance(node, zarr.Array):
            raise KeyError(f"{name!r} in dataset {self.url} is a group, not an array")
        return node

    def __contains__(self, name: str) -> bool:
        return name in self.names

    @property
    def names(self) -> list[str]:
        return sorted(n for n, _ in self.group.arrays())

    # -- views -----------------------------------------------------------------------
    def to_xarray(self, chunks: Any = None, group: str | None = None) -> Any:
        """Open the dataset (or a commit's group) as an ``xarray.Dataset`` of dask arrays."""
        import xarray as xr

        return xr.open_zarr(self.store, group=group, zarr_format=3, consolidated=False,
                            chunks=chunks if chunks is not None else {})

    @property
    def commits(self) -> CommitLog:
        return CommitLog(self.group, str(self.url))

    @property
    def tiers(self) -> TieredStore | None:
        return self.store if isinstance(self.store, TieredStore) else None

    def info(self) -> dict[str, Any]:
        """Kind, arrays (shape, chunks, dtype, codec, bytes), commits and tier counters."""
        arrays = {}
        for name, arr in sorted(self.group.arrays()):
            stored = arr.nbytes_stored()
            codec = arr.attrs.get("neurochunk_codec", {})
            arrays[name] = {
                "shape": tuple(arr.shape), "chunks": tuple(arr.chunks), "dtype": str(arr.dtype),
                "dims": tuple(arr.metadata.dimension_names or ()),
                "shards": tuple(arr.shards) if arr.shards else None,
                "codec": codec.get("spec", "custom"), "error_bound": codec.get("error_bound", {}),
                "codecs": [type(c).__name__ for c in (*arr.filters, *([arr.serializer] if arr.serializer else []), *arr.compressors)],
                "nbytes": int(arr.nbytes), "nbytes_stored": int(stored),
                "ratio": float(arr.nbytes / stored) if stored else float("nan"),
            }
        tiers = self.tiers
        return {
            "url": str(self.url), "kind": self.kind, "attrs": self.attrs, "arrays": arrays,
            "commits": [c.summary() for c in self.commits.list()],
            "tiers": tiers.stats() if tiers else None,
            "s3": self._s3.public() if self._s3 else None,
        }

    def __repr__(self) -> str:
        return f"<neurochunk.Dataset {self.kind} at {self.url}: {', '.join(self.names) or 'no arrays'}>"


def open_dataset(url: str | os.PathLike[str] | StoreURL, kind: str | None = None, **kwargs: Any) -> Dataset:
    """Open a dataset by URL; see :meth:`Dataset.open`."""
    return Dataset.open(url, kind=kind, **kwargs)


def create_dataset(url: str | os.PathLike[str] | StoreURL, kind: str, **kwargs: Any) -> Dataset:
    """Create a dataset at a URL; see :meth:`Dataset.create`."""
    return Dataset.create(url, kind, **kwargs)
