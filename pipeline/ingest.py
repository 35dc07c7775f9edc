"""Ingest numpy arrays, PNG/TIFF stacks, HDF5, Zarr v2/v3 and N5 into an OME-Zarr volume.

Every source is wrapped in a small picklable reader (``shape``, ``dtype``,
``read(box)``) that opens its files inside the task, so the graph holds only
paths. Tasks write whole stored chunks (shards); image stacks are read one
z-slab of planes per task so no plane is decoded twice, unless the slab would
exceed ``slab_bytes``, in which case each chunk reads its own planes.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np

from neurochunk.stores import Dataset
from neurochunk.stores.ome import create_volume, level_array

from .blockwise import Box, block_grid, run_tasks

__all__ = ["open_source", "ingest", "ArraySource", "StackSource", "HDF5Source", "ZarrSource", "N5Source"]


class ArraySource:
    """An in-memory array (numpy or anything sliceable with a shape and dtype)."""

    slab_reads = False

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)

    def read(self, box: Box) -> np.ndarray:
        return np.asarray(self.array[box])


def _natural_key(path: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


class StackSource:
    """A stack of 2-D images (PNG, TIFF, ...), one file per z plane, in natural filename order."""

    slab_reads = True

    def __init__(self, files: Sequence[str]) -> None:
        if not files:
            raise FileNotFoundError("the image stack has no files")
        self.files = list(files)
        first = self._plane(0)
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype

    def _plane(self, z: int) -> np.ndarray:
        path = self.files[z]
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            plane = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                plane = np.asarray(im)
        if plane.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D grayscale plane, got shape {plane.shape}")
        if z and plane.shape != self.shape[1:]:
            raise ValueError(f"{path}: plane shape {plane.shape} differs from the stack's {self.shape[1:]}")
        return plane

    def read(self, box: Box) -> np.ndarray:
        return np.stack([self._plane(z)[box[1], box[2]] for z in range(box[0].start, box[0].stop)])


class HDF5Source:
    """One dataset of an HDF5 file (``.gz``-compressed files are unpacked to a temporary file first).

    ``transforms`` names an (n, 2) dataset mapping stored ids to final ids, as in
    Raveler/NeuroProof ground truth, where ``stack`` holds per-plane superpixels
    and ``transforms`` maps them to 3-D bodies; ids it does not list map to 0.
    """

    slab_reads = False

    def __init__(self, path: str, dataset: str | None = None, transforms: str | None = None) -> None:
        import h5py

        if path.endswith(".gz"):
            tmp = Path(tempfile.mkdtemp(prefix="neurochunk-h5-")) / Path(path).stem
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 16 * 2**20)
            path = str(tmp)
        self.path = path
        with h5py.File(path, "r") as f:
            if dataset is None:
                found: list[str] = []
                f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None)
                if not found:
                    raise ValueError(f"{path}: no 3-D dataset in this HDF5 file")
                dataset = found[0]
            if dataset not in f:
                raise KeyError(f"{path}: no dataset {dataset!r}; it has {list(f)}")
            d = f[dataset]
            self.dataset, self.shape, self.dtype = dataset, tuple(d.shape), np.dtype(d.dtype)
            self.lut = None
            if transforms is not None:
                if transforms not in f:
                    raise KeyError(f"{path}: no transforms dataset {transforms!r}; it has {list(f)}")
                pairs = np.asarray(f[transforms][...])
                if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.min() < 0:
                    raise ValueError(f"{path}: {transforms!r} must be (n, 2) non-negative (from id, to id) pairs")
                self.lut = np.zeros(int(pairs[:, 0].max()) + 1, dtype=np.uint64)
                self.lut[pairs[:, 0]] = pairs[:, 1]
                self.dtype = np.dtype(np.uint32 if pairs[:, 1].max() < 2**32 else np.uint64)
                self.lut = self.lut.astype(self.dtype)

    def read(self, box: Box) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            block = np.asarray(f[self.dataset][box])
        if self.lut is None:
            return block
        if block.min() < 0 or block.max() >= len(self.lut):
            raise ValueError(f"{self.path}: ids in {box} fall outside the transforms table")
        return self.lut[block]


class ZarrSource:
    """An existing Zarr v2 or v3 array (``path`` or ``path/to/array``)."""

    slab_reads = False

    def __init__(self, path: str) -> None:
        import zarr

        node = zarr.open(path, mode="r")
        if not isinstance(node, zarr.Array):
            arrays = sorted(n for n, _ in node.arrays())
            if not arrays:
                raise ValueError(f"{path}: a Zarr group with no arrays")
            node = node[arrays[0]]
        self.array = node
        self.shape, self.dtype = tuple(node.shape), np.dtype(node.dtype)

    def read(self, box: Box) -> np.ndarray:
        return np.asarray(self.array[box])


class N5Source:
    """An N5 dataset (raw or gzip blocks; N5 stores axes x-first, read here as z, y, x)."""

    slab_reads = False

    def __init__(self, path: str) -> None:
        attrs_path = Path(path) / "attributes.json"
        if not attrs_path.exists():
            raise FileNotFoundError(f"{path}: no N5 attributes.json")
        meta = json.loads(attrs_path.read_text())
        try:
            self.shape = tuple(int(d) for d in meta["dimensions"][::-1])
            self.block = tuple(int(b) for b in meta["blockSize"][::-1])
            self.dtype = np.dtype(meta["dataType"]).newbyteorder(">")
        except KeyError as exc:
            raise ValueError(f"{path}: N5 attributes.json lacks {exc}") from None
        self.compression = (meta.get("compression") or {"type": meta.get("compressionType", "raw")})["type"]
        if self.compression not in ("raw", "gzip"):
            raise ValueError(f"{path}: N5 compression {self.compression!r} is not supported (raw, gzip)")
        self.path = path

    def _block(self, idx: tuple[int, ...]) -> np.ndarray | None:
        f = Path(self.path, *map(str, idx[::-1]))
        if not f.exists():
            return None
        raw = f.read_bytes()
        ndim = int.from_bytes(raw[2:4], "big")
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        body = raw[4 + 4 * ndim:]
        if self.compression == "gzip":
            import zlib

            body = zlib.decompress(body, 47)  # gzip or zlib framing
        return np.frombuffer(body, dtype=self.dtype)[: int(np.prod(dims))].reshape(dims[::-1])

    def read(self, box: Box) -> np.ndarray:
        out = np.zeros(tuple(s.stop - s.start for s in box), dtype=self.dtype.newbyteorder("="))
        lo = [s.start // b for s, b in zip(box, self.block, strict=True)]
        hi = [(s.stop - 1) // b for s, b in zip(box, self.block, strict=True)]
        for idx in np.ndindex(*[h - l_ + 1 for l_, h in zip(lo, hi, strict=True)]):
            g = tuple(i + l_ for i, l_ in zip(idx, lo, strict=True))
            blk = self._block(g)
            if blk is None:
                continue
            start = [i * b for i, b in zip(g, self.block, strict=True)]
            src = tuple(slice(max(s.start - a, 0), min(s.stop - a, n))
                        for s, a, n in zip(box, start, blk.shape, strict=True))
            dst = tuple(slice(a + r.start - s.start, a + r.stop - s.start)
                        for s, a, r in zip(box, start, src, strict=True))
            out[dst] = blk[src]
        return out


def open_source(source: Any, dataset: str | None = None, transforms: str | None = None) -> Any:
    """Wrap ``source`` in a reader: a numpy array, a folder or glob of PNG/TIFF planes, a multi-page TIFF,
    an HDF5 file (``file.h5`` or ``file.h5:dataset``, ``.gz`` allowed), a Zarr v2/v3 array or an N5 dataset."""
    if not isinstance(source, (str, os.PathLike)):
        return ArraySource(source)
    path = str(source)
    if re.search(r"\.(h5|hdf5|hdf)(\.gz)?:", path):
        path, dataset = path.rsplit(":", 1)
    low = path.lower()
    if re.search(r"\.(h5|hdf5|hdf)(\.gz)?$", low):
        return HDF5Source(path, dataset, transforms)
    if transforms is not None:
        raise ValueError(f"{path}: transforms apply to HDF5 sources only")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "attributes.json")):
            return N5Source(path)
        if any(os.path.exists(os.path.join(path, m)) for m in ("zarr.json", ".zarray", ".zgroup")):
            return ZarrSource(path)
        files = [f for f in glob.glob(os.path.join(path, "*")) if f.lower().endswith((".png", ".tif", ".tiff"))]
        return StackSource(sorted(files, key=_natural_key))
    if any(c in path for c in "*?["):
        return StackSource(sorted(glob.glob(path), key=_natural_key))
    if low.endswith((".tif", ".tiff")) and os.path.exists(path):
        import tifffile

        return ArraySource(tifffile.memmap(path) if _memmappable(path) else tifffile.imread(path))
    if low.endswith(".npy"):
        return ArraySource(np.load(path, mmap_mode="r"))
    raise ValueError(f"cannot tell what kind of volume source {path!r} is (PNG/TIFF folder or glob, .tif, "
                     ".h5[:dataset], .npy, Zarr or N5 folder)")


def _memmappable(path: str) -> bool:
    import tifffile

    try:
        tifffile.memmap(path, mode="r")
        return True
    except Exception:
        return False


def _ingest_task(reader: Any, dst: Any, boxes: list[Box]) -> int:
    if reader.slab_reads and len(boxes) > 1:
        z = boxes[0][0]
        slab = reader.read((z, slice(0, reader.shape[1]), slice(0, reader.shape[2])))
        for box in boxes:
            dst[box] = slab[:, box[1], box[2]]
    else:
        for box in boxes:
            dst[box] = reader.read(box)
    return len(boxes)


def ingest(source: Any, out: str | os.PathLike[str], *, labels: bool = False, dataset: str | None = None,
           transforms: str | None = None,
           voxel_size: Sequence[float] = (1.0, 1.0, 1.0), unit: str = "nanometer",
           chunks: Sequence[int] | None = None, shards: Sequence[int] | None = None, codec: str | None = None,
           dtype: Any = None, client: Any = None, progress: bool = True, overwrite: bool = True,
           slab_bytes: int = 256 * 2**20) -> Dataset:
    """Copy a volume from ``source`` into a new OME-Zarr volume at ``out``.

    Parameters
    ----------
    source
        See :func:`open_source`.
    labels
        Store as a label volume (default chunks 64^3 instead of 128^3).
    voxel_size, unit
        Physical voxel size (z, y, x) and its unit.
    chunks, shards, codec
        Storage layout of level 0.
    dtype
        Cast to this dtype (default: keep the source's, native byte order).
    slab_bytes
        Largest z-slab of planes one task may decode at once for image stacks.
    transforms
        HDF5 only: an (n, 2) id-mapping dataset applied while reading (see :class:`HDF5Source`).

    Returns
    -------
    The new volume; its ``neurochunk`` block records the ``source``.
    """
    reader = open_source(source, dataset, transforms)
    if len(reader.shape) != 3:
        raise ValueError(f"{source}: a volume needs 3 dimensions (z, y, x), got shape {reader.shape}")
    out_dtype = np.dtype(dtype) if dtype is not None else reader.dtype.newbyteorder("=")
    ds = create_volume(out, reader.shape, out_dtype, labels=labels, voxel_size=voxel_size, unit=unit,
                       chunks=chunks, shards=shards, codec=codec, overwrite=overwrite,
                       attrs={"source": str(source) if isinstance(source, (str, os.PathLike))
                              else type(source).__name__})
    dst = level_array(ds, 0)
    unit_shape = dst.shards or dst.chunks
    grid = block_grid(reader.shape, unit_shape)
    slab = unit_shape[0] * reader.shape[1] * reader.shape[2] * reader.dtype.itemsize
    groups: dict[Any, list[Box]] = {}
    for idx, box in grid.items():
        key = idx[0] if reader.slab_reads and slab <= slab_bytes else idx
        groups.setdefault(key, []).append(box)
    task = dask.delayed(_ingest_task, pure=False)
    run_tasks([task(reader, dst, boxes) for boxes in groups.values()], client, f"ingest {Path(str(source)).name}"
              if isinstance(source, (str, os.PathLike)) else "ingest", progress)
    return ds
