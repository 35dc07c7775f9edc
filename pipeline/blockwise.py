"""Run a chunk kernel with a halo over a volume and write a new volume, in bounded memory.

Each task reads its output chunks' box grown by the halo straight from the
source store, runs the kernel, crops the halo and writes the chunks. Nothing
crosses tasks, so peak memory per task is ``(g * chunk + 2 * halo)^3`` voxels
times the kernel's working set, whatever the volume's size, where ``g`` (1 to
4 chunks per axis) is chosen to fit ``task_bytes``; the graph has one task per
group of chunks. Dask's
``map_overlap`` instead slices and concatenates the neighbours' chunks inside
the graph, holding up to 27 source chunks per output chunk in memory
(``benchmarks/connectomics.py --scenario halo`` measures both).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dask
import numpy as np
from tqdm.auto import tqdm

from neurochunk.stores import Dataset
from neurochunk.stores.ome import create_volume, level_array, open_volume, written_chunks

__all__ = ["Box", "block_grid", "read_box", "run_tasks", "blockwise", "source_array", "group_factor"]

Box = tuple[slice, slice, slice]


def block_grid(shape: Sequence[int], block: Sequence[int]) -> dict[tuple[int, ...], Box]:
    """Every block's grid index and box; edge blocks are cut at the volume's end."""
    ranges = [range(-(-int(s) // int(b))) for s, b in zip(shape, block, strict=True)]
    return {idx: tuple(slice(i * b, min((i + 1) * b, s)) for i, b, s in zip(idx, block, shape, strict=True))
            for idx in itertools.product(*ranges)}


def source_array(src: Any, level: int | str = 0) -> Any:
    """The array behind ``src``: a volume's level, a ``zarr.Array`` or a numpy array as given."""
    if isinstance(src, Dataset):
        return src[str(level)]
    if isinstance(src, (str, os.PathLike)):
        return open_volume(src)[str(level)]
    return src


def read_box(src: Any, box: Box, halo: Sequence[int] = (0, 0, 0), mode: str = "nearest", cval: Any = 0) -> np.ndarray:
    """Read ``box`` grown by ``halo`` from ``src``; the part outside the volume is padded by ``mode``.

    ``mode`` is ``"nearest"`` (edge), ``"reflect"`` (symmetric) or ``"constant"`` (``cval``).
    """
    shape = src.shape
    lo = [max(s.start - h, 0) for s, h in zip(box, halo, strict=True)]
    hi = [min(s.stop + h, n) for s, h, n in zip(box, halo, shape, strict=True)]
    block = np.asarray(src[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])
    pad = [(max(0, h - s.start), max(0, s.stop + h - n)) for s, h, n in zip(box, halo, shape, strict=True)]
    if any(p for pair in pad for p in pair):
        np_mode = {"nearest": "edge", "reflect": "symmetric", "constant": "constant"}.get(mode)
        if np_mode is None:
            raise ValueError(f"halo padding mode must be 'nearest', 'reflect' or 'constant', not {mode!r}")
        kw = {"constant_values": cval} if np_mode == "constant" else {}
        block = np.pad(block, pad, mode=np_mode, **kw)
    return block


class _TqdmCallback(dask.callbacks.Callback):
    def __init__(self, bar: tqdm, keys: set[Any]) -> None:
        super().__init__()
        self.bar, self.keys = bar, keys

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in self.keys:
            self.bar.update(1)


def run_tasks(tasks: Sequence[Any], client: Any = None, desc: str = "", progress: bool = True) -> list[Any]:
    """Compute delayed ``tasks`` (on ``client`` or the threaded scheduler) with a progress bar on stderr."""
    if not tasks:
        return []
    with tqdm(total=len(tasks), desc=desc, disable=not progress, unit="chunk", leave=False) as bar:
        if client is not None:
            from distributed import as_completed

            futures = client.compute(list(tasks))
            index = {f.key: i for i, f in enumerate(futures)}
            out: list[Any] = [None] * len(futures)
            for fut, value in as_completed(futures, with_results=True):
                out[index[fut.key]] = value
                bar.update(1)
            return out
        keys = {t.key for t in tasks}
        with _TqdmCallback(bar, keys):
            return list(dask.compute(*tasks, scheduler="threads"))


def _halo_task(src: Any, dst: Any, group: Box, boxes: list[Box], kernel: Callable[..., Any], halo: Sequence[int],
               mode: str, cval: Any, kwargs: dict[str, Any], extra: Sequence[Any] = ()) -> int:
    blocks = [read_box(a, group, halo, mode, cval) for a in (src, *extra)]
    if kwargs.get("xp") == "cupy":
        import cupy

        blocks = [cupy.asarray(b) for b in blocks]
        kwargs = {k: v for k, v in kwargs.items() if k != "xp"}
    result = kernel(*blocks, **kwargs)
    if hasattr(result, "get") and not isinstance(result, np.ndarray):
        result = result.get()  # a cupy kernel: bring the result home before writing
    result = np.asarray(result)
    for box in boxes:
        inner = tuple(slice(h + s.start - g.start, h + s.stop - g.start)
                      for h, s, g in zip(halo, box, group, strict=True))
        dst[box] = result[inner].astype(dst.dtype, copy=False)
    return len(boxes)


def group_factor(chunk: Sequence[int], halo: Sequence[int], itemsize: int, task_bytes: int) -> int:
    """How many chunks per axis one task computes: the most (up to 4) whose grown box fits ``task_bytes``.

    A wide halo re-reads and recomputes ``((c + 2h) / c)^3`` times the chunk; grouping ``g^3`` chunks
    under one halo cuts that to ``((g c + 2h) / g c)^3`` at ``g^3`` times the memory per task.
    """
    best = 1
    for g in range(2, 5):
        grown = np.prod([g * c + 2 * h for c, h in zip(chunk, halo, strict=True)])
        if not any(halo) or grown * max(itemsize, 4) * 4 > task_bytes:
            break
        best = g
    return best


def blockwise(src: Any, kernel: Callable[..., Any], out: str | os.PathLike[str], *, halo: int | Sequence[int] = 0,
              dtype: Any = None, chunks: Sequence[int] | None = None, labels: bool = False, mode: str = "nearest",
              cval: Any = 0, kwargs: dict[str, Any] | None = None, client: Any = None, level: int | str = 0,
              resume: bool = False, progress: bool = True, voxel_size: Sequence[float] | None = None,
              shards: Sequence[int] | None = None, desc: str | None = None, extra: Sequence[Any] = (),
              task_bytes: int = 256 * 2**20, codec: str | None = None) -> Dataset:
    """Apply ``kernel(block, **kwargs)`` with a halo to every chunk of ``src``; write a new volume at ``out``.

    Parameters
    ----------
    src
        A volume dataset (its ``level``), a ``zarr.Array`` or a numpy array (z, y, x).
    kernel
        A chunk function returning an array of the block's shape (halo included).
    halo
        Voxels of context per side (an int or one per axis); may exceed the chunk size.
    dtype, chunks, labels
        Output dtype (default: the source's), chunk shape (default: the source's,
        else the OME default) and whether the output is a label volume.
    mode, cval
        How the halo is filled outside the volume (``"nearest"``, ``"reflect"``, ``"constant"``).
    resume
        Keep an existing output at ``out`` and compute only the chunks it lacks.
    extra
        More volumes or arrays of the same shape; the same grown box of each is
        passed to ``kernel`` after the first (``kernel(block, *extra_blocks, **kwargs)``).
        ``kwargs["xp"] = "cupy"`` moves the blocks to the GPU first.
    codec
        Codec preset of the output (default lossless).
    task_bytes
        Memory one task may use (about four grown blocks): with a wide halo a task
        computes up to 4^3 neighbouring chunks under one halo (:func:`group_factor`).

    Returns
    -------
    The output volume :class:`~neurochunk.stores.Dataset`.
    """
    arr = source_array(src, level)
    halo_t = (int(halo),) * 3 if np.isscalar(halo) else tuple(int(h) for h in halo)
    if len(halo_t) != 3 or min(halo_t) < 0:
        raise ValueError(f"halo must be a non-negative int or three of them, got {halo!r}")
    src_chunks = tuple(getattr(arr, "chunks", ()) or ()) or None
    if isinstance(src, Dataset) and voxel_size is None:
        voxel_size = src.attrs.get("voxel_size")
    op = {"op": getattr(kernel, "__name__", str(kernel)), "halo": list(halo_t)}
    ds = _output_volume(out, arr.shape, np.dtype(dtype or arr.dtype), chunks or src_chunks, labels, resume,
                        voxel_size, shards, attrs=op, codec=codec)
    dst = level_array(ds, 0)
    block = dst.shards or dst.chunks
    done = written_chunks(dst) if resume else set()
    g = group_factor(block, halo_t, np.dtype(arr.dtype).itemsize, task_bytes)
    groups: dict[tuple[int, ...], list[Box]] = {}
    for idx, box in block_grid(arr.shape, block).items():
        if idx not in done:
            groups.setdefault(tuple(i // g for i in idx), []).append(box)
    task = dask.delayed(_halo_task, pure=False)
    kw = dask.delayed(dict(kwargs or {}), pure=True)  # one copy of large parameters (lookup tables) per graph
    others = [source_array(e, level) for e in extra]
    for e in others:
        if tuple(e.shape) != tuple(arr.shape):
            raise ValueError(f"blockwise: an extra input has shape {tuple(e.shape)}, the source {tuple(arr.shape)}")
    tasks = []
    for boxes in groups.values():
        hull = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        tasks.append(task(arr, dst, hull, boxes, kernel, halo_t, mode, cval, kw, others))
    run_tasks(tasks, client, desc or f"blockwise {getattr(kernel, '__name__', '')}", progress)
    ds.update_attrs(complete=True)
    return ds


def _output_volume(out: str | os.PathLike[str], shape: Sequence[int], dtype: np.dtype[Any], chunks: Any,
                   labels: bool, resume: bool, voxel_size: Any, shards: Any, attrs: dict[str, Any],
                   codec: str | None = None) -> Dataset:
    if resume:
        try:
            ds = open_volume(out, mode="r+")
        except FileNotFoundError:
            ds = None
        if ds is not None:
            have = ds["0"]
            if tuple(have.shape) != tuple(shape) or np.dtype(have.dtype) != dtype:
                raise ValueError(f"cannot resume into {out}: it holds {have.shape} {have.dtype}, "
                                 f"this run writes {tuple(shape)} {dtype}")
            return ds
    return create_volume(out, shape, dtype, labels=labels, chunks=chunks, shards=shards, codec=codec,
                         voxel_size=voxel_size or (1.0, 1.0, 1.0), overwrite=True,
                         attrs={**attrs, "complete": False}, write_empty_chunks=True)


def iter_boxes(shape: Sequence[int], block: Sequence[int]) -> Iterable[Box]:
    """The boxes of :func:`block_grid` in grid order."""
    return block_grid(shape, block).values()
