"""Multiscale pyramids: 2x per level (mean for images, mode for labels) as OME-Zarr levels.

Level ``k + 1`` is computed from the stored level ``k``, one task per stored
chunk of the new level, each reading the 2x larger box beneath it: memory per
task is eight chunks, and each level is its own small graph.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from neurochunk.kernels.volume import downsample_mean, downsample_mode
from neurochunk.stores import Dataset
from neurochunk.stores.ome import add_level, levels, open_volume

from .blockwise import Box, block_grid, run_tasks

__all__ = ["build_pyramid", "pyramid_shapes"]


def pyramid_shapes(shape: tuple[int, ...], min_size: int = 32, max_levels: int | None = None) -> list[tuple[int, ...]]:
    """Shapes of levels 0, 1, ...: halve (rounding up) until the largest axis is at most ``min_size``."""
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1]) > min_size and (max_levels is None or len(shapes) < max_levels):
        shapes.append(tuple(-(-s // 2) for s in shapes[-1]))
    return shapes


def _down_task(src: Any, dst: Any, box: Box, method: str) -> int:
    fine = tuple(slice(2 * s.start, min(2 * s.stop, n)) for s, n in zip(box, src.shape, strict=True))
    block = np.asarray(src[fine])
    dst[box] = downsample_mode(block) if method == "mode" else downsample_mean(block)
    return 1


def build_pyramid(volume: Dataset | str, *, min_size: int = 32, max_levels: int | None = None,
                  method: str | None = None, client: Any = None, progress: bool = True) -> list[str]:
    """Add levels ``1, 2, ...`` to a volume, each 2x smaller along every axis than the one before.

    Parameters
    ----------
    volume
        A volume dataset opened ``r+`` (or its URL).
    min_size
        Stop once the largest axis of the coarsest level is at most this.
    method
        ``"mean"`` or ``"mode"``; default by the volume's role (images: mean, labels: mode).

    Returns
    -------
    The level paths, finest first.
    """
    ds = open_volume(volume, mode="r+") if not isinstance(volume, Dataset) else volume
    method = method or ("mode" if ds.attrs.get("role") == "labels" else "mean")
    if method not in ("mean", "mode"):
        raise ValueError(f"pyramid method must be 'mean' or 'mode', not {method!r}")
    base = ds["0"]
    shapes = pyramid_shapes(tuple(base.shape), min_size, max_levels)
    task = dask.delayed(_down_task, pure=False)
    for k in range(1, len(shapes)):
        src = ds[str(k - 1)]
        dst = add_level(ds, str(k), shapes[k], base.dtype, (2**k,) * 3, chunks=base.chunks,
                        shards=base.shards)
        unit = dst.shards or dst.chunks
        run_tasks([task(src, dst, box, method) for box in block_grid(shapes[k], unit).values()], client,
                  f"pyramid level {k}", progress)
    ds.update_attrs(pyramid={"method": method, "levels": len(shapes)})
    return levels(ds)
