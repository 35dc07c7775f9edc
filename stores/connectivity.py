"""Stored synapses: one ``connectivity`` dataset per projection, block-sparse CSR by post chunk.

Block ``c`` holds the synapses onto post chunk ``c``, rows = presynaptic
neurons: ``indptr[c]`` (``n_pre + 1`` offsets into the synapse arrays),
``indices`` (post neuron, relative to the post population), ``weights``
(float32) and ``delays`` (steps). Blocks are appended in chunk order; a block
is readable once ``blocks_written`` in the attributes counts it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .dataset import Dataset

__all__ = ["create_projection", "append_block", "read_block"]

_SYN_CHUNK = 1 << 20


def create_projection(url: str, *, n_pre: int, n_post: int, n_blocks: int, attrs: dict[str, Any] | None = None,
                      **opts: Any) -> Dataset:
    """An empty connectivity dataset for ``n_blocks`` post chunks (replacing any dataset at ``url``)."""
    ds = Dataset.create(url, "connectivity", attrs={"n_pre": int(n_pre), "n_post": int(n_post), "blocks_written": 0,
                                                    **(attrs or {})}, overwrite=True, **opts)
    ds.create_array("indptr", (n_blocks, n_pre + 1), np.int64, chunks=(1, min(n_pre + 1, 1 << 22)),
                    dims=("block", "pre"))
    for name, dtype in (("indices", np.int32), ("weights", np.float32), ("delays", np.int32)):
        ds.create_array(name, (0,), dtype, chunks=(_SYN_CHUNK,), dims=("synapse",))
    return ds


def append_block(ds: Dataset, block: int, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
                 delays: np.ndarray) -> None:
    """Append the synapses of post chunk ``block`` (blocks must come in order)."""
    done = int(ds.attrs["blocks_written"])
    if block != done:
        raise ValueError(f"connectivity {ds.url}: block {block} written out of order (next is {done})")
    if not len(indices) == len(weights) == len(delays) == indptr[-1]:
        raise ValueError(f"connectivity {ds.url}: block {block} has inconsistent lengths")
    start = ds["indices"].shape[0]
    if len(indices):
        ds["indices"].append(indices.astype(np.int32))
        ds["weights"].append(weights.astype(np.float32))
        ds["delays"].append(delays.astype(np.int32))
    ds["indptr"][block] = indptr.astype(np.int64) + start
    ds.update_attrs(blocks_written=done + 1)


def read_block(ds: Dataset, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr from 0, indices, weights, delays)`` of post chunk ``block``."""
    if block >= int(ds.attrs["blocks_written"]):
        raise ValueError(f"connectivity {ds.url}: block {block} was never written "
                         f"({ds.attrs['blocks_written']} of {ds['indptr'].shape[0]} are)")
    ptr = np.asarray(ds["indptr"][block])
    a, b = int(ptr[0]), int(ptr[-1])
    sl = slice(a, b)
    return ptr - a, np.asarray(ds["indices"][sl]), np.asarray(ds["weights"][sl]), np.asarray(ds["delays"][sl])
