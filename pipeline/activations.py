"""The activation store: stream a model's activations to Zarr in whole chunks, read them back as dask arrays.

A producer (any loop) calls :meth:`ActivationWriter.append` with blocks of any
length along the growing axis (``sample`` or ``time``). The writer holds at most
one row of whole chunks (or shards) along that axis, writes it when full, and
never holds the run. Readers are lazy: :func:`contiguous` for analysis ranges and
:func:`shuffled` / :func:`minibatches` for training, which shuffle chunk order
and rows within a window of chunks with a counter-based permutation keyed by
(seed, epoch, window), so any chunking of the work draws the same order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr

from neurochunk.stores import Dataset

from .io import read_array

__all__ = ["ActivationWriter", "contiguous", "shuffled", "minibatches", "window_permutation", "spike_raster"]


class ActivationWriter:
    """Append activations of shape ``(n, *unit_shape)`` along axis 0 in whole chunks.

    Parameters
    ----------
    ds
        An ``activations`` dataset opened for writing.
    name
        Array name (e.g. ``"layer1"``).
    unit_shape
        Shape of one row: ``(unit,)``, ``(sample, unit)`` or ``(layer, channel, y, x)``.
    dims
        Dimension names, the growing axis first (``("sample", "unit")``, ``("time", "sample", "unit")``...).
    chunks
        Chunk shape, axis 0 included; the writer flushes ``shards[0]`` (or ``chunks[0]``) rows at a time.
    codec
        A preset of :mod:`neurochunk.stores.codecs` (``lossless``, ``bitround:7``, ``float16`` ...).
    resume
        Continue an array a previous (possibly killed) producer wrote: keep its finished rows (its
        ``rows`` attribute), drop anything after them, and append from there. Its row shape must match.
    """

    def __init__(self, ds: Dataset, name: str, unit_shape: Sequence[int], *, dims: Sequence[str],
                 chunks: Sequence[int], dtype: Any = np.float32, codec: str | None = None,
                 shards: Sequence[int] | None = None, attrs: dict[str, Any] | None = None,
                 overwrite: bool = False, resume: bool = False) -> None:
        self.unit_shape = tuple(int(s) for s in unit_shape)
        if len(chunks) != len(self.unit_shape) + 1:
            raise ValueError(f"array {name!r}: chunks {tuple(chunks)} must have {len(self.unit_shape) + 1} "
                             f"entries (axis 0, then {self.unit_shape})")
        self.name = name
        self.rows = 0  # finished rows on disk
        if resume and name in ds:
            self.array = ds[name]
            if tuple(self.array.shape[1:]) != self.unit_shape:
                raise ValueError(f"array {name!r} of {ds.url} has rows of shape {tuple(self.array.shape[1:])}, "
                                 f"not {self.unit_shape}; cannot resume it")
            self.rows = int(self.array.attrs.get("rows", self.array.shape[0]))
            self.array.resize((self.rows, *self.unit_shape))
            if self.rows % int((self.array.shards or self.array.chunks)[0]):
                raise ValueError(f"array {name!r} of {ds.url} was closed after a partial chunk row "
                                 f"({self.rows} rows); it cannot be resumed in whole chunks")
        else:
            self.array = ds.create_array(name, (0, *self.unit_shape), dtype, chunks=chunks, dims=dims,
                                         codec=codec, shards=shards, attrs=attrs, overwrite=overwrite)
        self.dtype = np.dtype(self.array.dtype)
        self.block = int((self.array.shards or self.array.chunks)[0])
        self._buf = np.empty((self.block, *self.unit_shape), self.dtype)
        self._fill = 0
        self.bytes_written = 0

    def append(self, values: Any) -> None:
        """Append rows; ``values`` has shape ``(n, *unit_shape)`` (a cupy array is copied to host)."""
        values = np.asarray(values.get() if hasattr(values, "get") else values)
        if values.shape[1:] != self.unit_shape:
            raise ValueError(f"array {self.name!r}: appended block has row shape {values.shape[1:]}, "
                             f"expected {self.unit_shape}")
        pos = 0
        n = values.shape[0]
        while pos < n:
            if self._fill == 0 and n - pos >= self.block:
                whole = (n - pos) // self.block * self.block
                self._write(values[pos:pos + whole])  # whole chunk rows go straight through
                pos += whole
                continue
            take = min(self.block - self._fill, n - pos)
            self._buf[self._fill:self._fill + take] = values[pos:pos + take]
            self._fill += take
            pos += take
            if self._fill == self.block:
                self._write(self._buf)
                self._fill = 0

    def _write(self, rows: np.ndarray) -> None:
        start = self.rows
        self.array.resize((start + rows.shape[0], *self.unit_shape))
        self.array[start:start + rows.shape[0]] = rows
        self.rows += rows.shape[0]
        self.bytes_written += rows.nbytes
        # written last: a producer killed after the resize leaves rows that readers ignore
        self.array.attrs["rows"] = self.rows

    def close(self) -> zarr.Array:
        """Write the last partial chunk row and return the array."""
        if self._fill:
            self._write(self._buf[:self._fill])
            self._fill = 0
        return self.array

    def __enter__(self) -> ActivationWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()


def _complete(ds: Dataset, name: str) -> da.Array:
    """The rows of ``name`` that a writer finished (its ``rows`` attribute), as a dask array."""
    x = read_array(ds, name)
    rows = ds[name].attrs.get("rows")
    return x[:rows] if rows is not None and rows < x.shape[0] else x


def contiguous(ds: Dataset, name: str, start: int = 0, stop: int | None = None) -> da.Array:
    """Rows ``start:stop`` of an activation array as a lazy dask array (one task per stored chunk)."""
    x = _complete(ds, name)
    n = x.shape[0]
    stop = n if stop is None else stop
    if not (0 <= start <= stop <= n):
        raise IndexError(f"array {name!r} of {ds.url} has {n} rows; range {start}:{stop} is outside it")
    return x[start:stop]


def window_permutation(n: int, seed: int, epoch: int, window: int) -> np.ndarray:
    """The permutation of ``n`` rows used for window ``window`` of ``epoch``; counter-based (Philox)."""
    rng = np.random.Generator(np.random.Philox(key=[seed & 0xFFFFFFFFFFFFFFFF, (epoch << 32) | window]))
    return rng.permutation(n)


def _permute_rows(block: np.ndarray, seed: int, epoch: int, block_info: Any = None) -> np.ndarray:
    window = block_info[0]["chunk-location"][0]
    return block[window_permutation(block.shape[0], seed, epoch, window)]


def _windows(ds: Dataset, name: str, seed: int, epoch: int, window_chunks: int) -> da.Array:
    x = _complete(ds, name)
    if x.shape[0] == 0:
        raise ValueError(f"array {name!r} of {ds.url} is empty")
    order = window_permutation(len(x.chunks[0]), seed, epoch, 0xFFFFFFFF)
    edges = np.concatenate([[0], np.cumsum(x.chunks[0])])
    y = da.concatenate([x[edges[i]:edges[i + 1]] for i in order], axis=0)
    sizes = [x.chunks[0][i] for i in order]
    win = tuple(sum(sizes[i:i + window_chunks]) for i in range(0, len(sizes), window_chunks))
    return y.rechunk({0: win}).map_blocks(_permute_rows, seed, epoch, dtype=y.dtype)


def shuffled(ds: Dataset, name: str, *, batch: int, seed: int = 0, epoch: int = 0,
             window_chunks: int = 4) -> da.Array:
    """The whole array in shuffled row order, one dask chunk per minibatch of ``batch`` rows.

    Chunk order is a permutation keyed by (seed, epoch); rows are then permuted
    within windows of ``window_chunks`` consecutive (shuffled) chunks, so each
    task reads at most ``window_chunks`` stored chunks and memory stays bounded.
    """
    return _windows(ds, name, seed, epoch, window_chunks).rechunk({0: batch})


def minibatches(ds: Dataset, name: str, *, batch: int, seed: int = 0, epoch: int = 0, window_chunks: int = 4,
                drop_last: bool = False) -> Iterator[np.ndarray]:
    """Yield shuffled minibatches (numpy) in the order of :func:`shuffled`.

    Each window is computed once, the next one in the background while the
    current one's batches are consumed: at most two windows are in memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    y = _windows(ds, name, seed, epoch, window_chunks)
    n = y.numblocks[0]
    carry = np.empty((0, *y.shape[1:]), y.dtype)
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(y.blocks[0].compute)
        for i in range(n):
            cur = nxt.result()
            if i + 1 < n:
                nxt = pool.submit(y.blocks[i + 1].compute)
            cur = np.concatenate([carry, cur]) if carry.shape[0] else cur
            full = cur.shape[0] // batch * batch
            for j in range(0, full, batch):
                yield cur[j:j + batch]
            carry = cur[full:]
    if carry.shape[0] and not drop_last:
        yield carry


def spike_raster(ds: Dataset, name: str, *, steps_per_chunk: int = 1000) -> da.Array:
    """A delta-coded event array (:mod:`neurochunk.stores.events`) as a lazy boolean ``(time, unit)`` raster.

    Each task decodes one range of ``steps_per_chunk`` steps, reading only the
    event chunks that cover it.
    """
    import dask

    from neurochunk.stores.events import read_raster

    arr = ds[name]
    if arr.attrs.get("layout") != "events":
        raise ValueError(f"array {name!r} of {ds.url} is not an event list (no layout='events' attribute)")
    n_steps, n_units = int(arr.attrs["n_steps"]), int(arr.attrs["n_units"])
    task = dask.delayed(read_raster, pure=True)
    parts = [da.from_delayed(task(arr, t, min(t + steps_per_chunk, n_steps)),
                             shape=(min(t + steps_per_chunk, n_steps) - t, n_units), dtype=bool)
             for t in range(0, n_steps, steps_per_chunk)]
    return da.concatenate(parts, axis=0) if parts else da.zeros((0, n_units), bool)
