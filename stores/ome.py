"""OME-Zarr 0.5 volumes: a ``volume`` dataset whose levels ``0``, ``1``, ... hold a (z, y, x) pyramid.

The root attributes carry OME-Zarr's ``ome`` block (``version: "0.5"``,
``multiscales`` with axes, units and one scale transform per level; label
volumes add ``image-label``) next to neurochunk's own block, so napari,
neuroglancer and :func:`neurochunk.stores.Dataset.open` all read the same group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync

from .dataset import Dataset
from .schema import SchemaError
from .urls import StoreURL

__all__ = ["AXES", "DEFAULT_CHUNKS", "create_volume", "open_volume", "add_level", "levels", "level_scale",
           "chunk_written", "written_chunks", "level_array", "read_level", "OME_VERSION"]

OME_VERSION = "0.5"
AXES = ("z", "y", "x")
DEFAULT_CHUNKS = {"image": (128, 128, 128), "labels": (64, 64, 64)}


def _axes(unit: str) -> list[dict[str, str]]:
    return [{"name": a, "type": "space", "unit": unit} for a in AXES]


def level_scale(voxel_size: Sequence[float], factors: Sequence[int]) -> dict[str, list[dict[str, Any]]]:
    """The OME ``coordinateTransformations`` of a level downsampled by ``factors`` per axis.

    The translation puts each coarse voxel's centre at the centre of the fine
    voxels it averages, as OME-Zarr viewers expect.
    """
    scale = [float(v) * int(f) for v, f in zip(voxel_size, factors, strict=True)]
    shift = [float(v) * (int(f) - 1) / 2 for v, f in zip(voxel_size, factors, strict=True)]
    return {"coordinateTransformations": [{"type": "scale", "scale": scale},
                                          {"type": "translation", "translation": shift}]}


def create_volume(url: str | os.PathLike[str] | StoreURL, shape: Sequence[int], dtype: Any, *,
                  voxel_size: Sequence[float] = (1.0, 1.0, 1.0), unit: str = "nanometer", labels: bool = False,
                  chunks: Sequence[int] | None = None, shards: Sequence[int] | None = None,
                  codec: str | None = None, name: str = "volume", overwrite: bool = False,
                  attrs: dict[str, Any] | None = None, write_empty_chunks: bool = False,
                  **dataset_kwargs: Any) -> Dataset:
    """Create an OME-Zarr 0.5 volume with an empty level ``0``.

    Parameters
    ----------
    shape, dtype
        Level 0's (z, y, x) shape and dtype.
    voxel_size, unit
        Physical size of a level-0 voxel along (z, y, x) and its OME unit.
    labels
        A label volume: integer dtype, default chunks 64^3, ``image-label`` metadata.
    chunks
        Chunk shape; default 128^3 for images, 64^3 for labels (clipped to ``shape``).
    shards
        Optional shard shape (a multiple of ``chunks``): one stored object per shard.
    write_empty_chunks
        Store all-fill chunks too, so every written chunk is visible in the store
        (resumable writers use chunk presence as their progress record).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise SchemaError(str(url), f"a volume needs a positive 3-D (z, y, x) shape, got {shape}", "0")
    if len(voxel_size) != 3 or min(float(v) for v in voxel_size) <= 0:
        raise SchemaError(str(url), f"voxel_size must be 3 positive numbers (z, y, x), got {tuple(voxel_size)}")
    dtype = np.dtype(dtype)
    if labels and dtype.kind not in "iub":
        raise SchemaError(str(url), f"a label volume needs an integer dtype, not {dtype}", "0")
    role = "labels" if labels else "image"
    chunks = tuple(min(int(c), s) for c, s in zip(chunks or DEFAULT_CHUNKS[role], shape, strict=True))
    multiscale = {"name": name, "axes": _axes(unit),
                  "datasets": [{"path": "0", **level_scale(voxel_size, (1, 1, 1))}],
                  "type": "mode" if labels else "mean"}
    ome: dict[str, Any] = {"version": OME_VERSION, "multiscales": [multiscale]}
    if labels:
        ome["image-label"] = {"version": OME_VERSION}
    block = {"role": role, "voxel_size": [float(v) for v in voxel_size], "unit": unit, **dict(attrs or {})}
    ds = Dataset.create(url, "volume", attrs=block, root_attrs={"ome": ome}, overwrite=overwrite, **dataset_kwargs)
    _create_level_array(ds, "0", shape, dtype, chunks, shards, codec, write_empty_chunks)
    return ds


def _create_level_array(ds: Dataset, path: str, shape: Sequence[int], dtype: Any, chunks: Sequence[int],
                        shards: Sequence[int] | None, codec: str | None, write_empty_chunks: bool) -> zarr.Array:
    if shards is not None:
        shards = tuple(min(int(s), -(-n // c) * c) for s, n, c in zip(shards, shape, chunks, strict=True))
        if any(s % c for s, c in zip(shards, chunks, strict=True)):
            raise SchemaError(str(ds.url), f"shards {tuple(shards)} must be multiples of chunks {tuple(chunks)}", path)
    arr = ds.create_array(path, shape, dtype, chunks=chunks, dims=AXES, codec=codec, shards=shards, overwrite=True)
    if write_empty_chunks:
        arr.attrs["neurochunk_write_empty_chunks"] = True
    return arr


def open_volume(url: str | os.PathLike[str] | StoreURL, mode: str = "r", **kwargs: Any) -> Dataset:
    """Open a volume dataset (schema-checked, including its OME block)."""
    return Dataset.open(url, kind="volume", mode=mode, **kwargs)


def levels(ds: Dataset) -> list[str]:
    """The paths of the multiscale levels, finest first."""
    return [d["path"] for d in ds.group.attrs["ome"]["multiscales"][0]["datasets"]]


def level_array(ds: Dataset, level: int | str = 0) -> zarr.Array:
    """One level as a ``zarr.Array`` (writable when ``ds`` was opened ``r+``; honours write_empty_chunks)."""
    arr = ds[str(level)]
    if arr.attrs.get("neurochunk_write_empty_chunks"):
        arr = arr.with_config({"write_empty_chunks": True})
    return arr


def add_level(ds: Dataset, path: str, shape: Sequence[int], dtype: Any, factors: Sequence[int], *,
              chunks: Sequence[int] | None = None, shards: Sequence[int] | None = None,
              codec: str | None = None) -> zarr.Array:
    """Create level ``path`` (downsampled by ``factors`` from level 0) and list it in ``multiscales``.

    The array is created before it is listed, so the volume validates at every moment.
    """
    base = ds["0"]
    chunks = tuple(min(int(c), int(s)) for c, s in zip(chunks or base.chunks, shape, strict=True))
    arr = _create_level_array(ds, path, shape, dtype, chunks, shards, codec, False)
    ome = dict(ds.group.attrs["ome"])
    ms = dict(ome["multiscales"][0])
    datasets = [d for d in ms["datasets"] if d["path"] != path]
    datasets.append({"path": path, **level_scale(ds.attrs["voxel_size"], factors)})
    ms["datasets"] = sorted(datasets, key=lambda d: int(d["path"]))
    ome["multiscales"] = [ms, *ome["multiscales"][1:]]
    ds.group.attrs["ome"] = ome
    return arr


def _chunk_key(arr: zarr.Array, coords: Sequence[int]) -> str:
    key = arr.metadata.encode_chunk_key(tuple(int(c) for c in coords))
    return f"{arr.path}/{key}" if arr.path else key


def chunk_written(arr: zarr.Array, coords: Sequence[int]) -> bool:
    """Whether the stored chunk (shard, if sharded) at grid ``coords`` exists."""
    return bool(sync(arr.store.exists(_chunk_key(arr, coords))))


def written_chunks(arr: zarr.Array) -> set[tuple[int, ...]]:
    """Grid coordinates of every stored chunk (shard) of ``arr``, from one listing."""
    prefix = f"{arr.path}/" if arr.path else ""
    proto_key = arr.metadata.encode_chunk_key((0,) * arr.ndim)
    sep = "/" if "/" in proto_key else "."
    head = proto_key.split(sep)[0] if proto_key.startswith("c") else ""

    async def _ls() -> list[str]:
        return [k async for k in arr.store.list_prefix(prefix + (head + sep if head else ""))]

    out = set()
    for key in sync(_ls()):
        rest = key[len(prefix):].split(sep)
        if head:
            rest = rest[1:]
        if len(rest) == arr.ndim and all(p.isdigit() for p in rest):
            out.add(tuple(int(p) for p in rest))
    return out


def read_level(ds: Dataset, level: int | str = 0) -> np.ndarray:
    """A whole level in memory (small volumes, tests and plots only)."""
    return np.asarray(ds[str(level)][...])

