"""Dask arrays from datasets and back: chunk-aligned reads, writes and commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from neurochunk.stores import CommitInfo, Dataset
from neurochunk.stores.arrays import create_named_array

__all__ = ["read_array", "write_array", "commit_arrays", "check_aligned", "regular_chunks"]


def read_array(ds: Dataset, name: str, *, group: zarr.Group | None = None) -> da.Array:
    """A dask array over one stored array, one task per stored chunk (shard, if sharded)."""
    arr = group[name] if group is not None else ds[name]
    chunks = arr.shards or arr.chunks
    token = f"{ds.url}/{arr.path}"
    return da.from_array(arr, chunks=chunks, name=f"read-{dask.base.tokenize(token, arr.metadata.to_dict())}",
                         asarray=False, fancy=False, lock=False, inline_array=True)


def regular_chunks(chunks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The Zarr chunk shape for dask ``chunks``: each axis' first chunk size."""
    return tuple(int(c[0]) if c else 1 for c in chunks)


def check_aligned(x_chunks: Sequence[Sequence[int]], store_chunks: Sequence[int], where: str) -> None:
    """Raise unless every dask chunk boundary falls on a stored chunk boundary.

    Unaligned writes from parallel tasks race on shared chunks and lose data.
    """
    for axis, (sizes, step) in enumerate(zip(x_chunks, store_chunks, strict=True)):
        edge = 0
        for i, size in enumerate(sizes[:-1]):
            edge += size
            if edge % step:
                raise ValueError(
                    f"{where}: dask chunk {i} on axis {axis} ends at {edge}, not on a stored chunk boundary "
                    f"(stored chunks are {step} along axis {axis}); rechunk first"
                )


def write_array(x: da.Array | np.ndarray, target: Dataset | zarr.Group, name: str, *, dims: Sequence[str],
                chunks: Sequence[int] | None = None, codec: str | None = None, compute: bool = True,
                overwrite: bool = False, fill_value: Any = 0) -> Any:
    """Write ``x`` as array ``name`` of ``target``, chunk-aligned and in parallel.

    ``chunks`` defaults to the dask array's own (regular) chunks; a dask array
    whose chunks do not align with them is rechunked first.
    """
    x = da.asarray(x)
    chunks = tuple(chunks) if chunks else regular_chunks(x.chunks)
    group, where = (target.group, str(target.url)) if isinstance(target, Dataset) else (target, str(target.store))
    arr = create_named_array(group, where, name, x.shape, x.dtype, chunks=chunks, dims=dims, codec=codec,
                             overwrite=overwrite, fill_value=fill_value)
    stored = arr.shards or arr.chunks
    try:
        check_aligned(x.chunks, stored, name)
    except ValueError:
        x = x.rechunk(stored)
    return da.store(x, arr, lock=False, compute=compute)


def commit_arrays(ds: Dataset, name: str, arrays: Mapping[str, tuple[Any, Sequence[str]]],
                  meta: Mapping[str, Any] | None = None, codec: str | None = None) -> CommitInfo:
    """Write ``{array: (values, dims)}`` as one atomic commit of ``ds``.

    The arrays are written in one parallel computation; the commit becomes
    visible only after every chunk is stored. On any error the partial commit is
    removed and the previous commit stays the latest.
    """
    pending = ds.commits.begin(name, meta)
    try:
        stores = [write_array(values, pending.group, key, dims=dims, codec=codec, compute=False)
                  for key, (values, dims) in arrays.items()]
        dask.compute(*stores)
        return pending.finish()
    except BaseException:
        pending.abort()
        raise
