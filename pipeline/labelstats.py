"""Per-label statistics out of core (count, bounding box, centroid, mean intensity) and dust removal.

Each chunk yields sufficient statistics for the labels it holds; they are
combined in a tree (fan-in ``fan_in``), so no task holds more than a few
chunks' label tables. The table is returned as a pandas DataFrame and stored in
the label volume as an atomic commit named ``label_stats``.
"""

from __future__ import annotations

import os
from typing import Any

import dask
import numpy as np
import pandas as pd

from neurochunk.kernels.volume import combine_label_stats, label_stats_chunk, relabel
from neurochunk.stores import Dataset
from neurochunk.stores.ome import open_volume

from .blockwise import Box, block_grid, blockwise, run_tasks, source_array

__all__ = ["label_stats", "read_label_stats", "remove_dust", "stats_table"]

COLUMNS = ("label", "count", "z_min", "y_min", "x_min", "z_max", "y_max", "x_max",
           "centroid_z", "centroid_y", "centroid_x", "mean_intensity")


def _chunk_stats(labels: Any, image: Any, box: Box) -> dict[str, np.ndarray]:
    lab = np.asarray(labels[box])
    img = None if image is None else np.asarray(image[box])
    return label_stats_chunk(lab, img, tuple(s.start for s in box))


def stats_table(stats: dict[str, np.ndarray], with_intensity: bool = True) -> pd.DataFrame:
    """The combined sufficient statistics as a table, one row per label."""
    count = stats["count"].astype(np.float64)
    table = {"label": stats["label"], "count": stats["count"]}
    for i, axis in enumerate("zyx"):
        table[f"{axis}_min"] = stats["bbox_min"][:, i]
    for i, axis in enumerate("zyx"):
        table[f"{axis}_max"] = stats["bbox_max"][:, i]
    for i, axis in enumerate("zyx"):
        table[f"centroid_{axis}"] = stats["sum_zyx"][:, i] / count
    table["mean_intensity"] = stats["sum_intensity"] / count if with_intensity else np.full(len(count), np.nan)
    return pd.DataFrame(table)


def label_stats(labels: Dataset | str | Any, image: Dataset | str | Any = None, *, client: Any = None,
                store: bool = True, fan_in: int = 8, progress: bool = True) -> pd.DataFrame:
    """Voxel count, bounding box (inclusive), centroid and mean intensity of every nonzero label.

    Parameters
    ----------
    labels
        A label volume (level 0), its URL, or an array.
    image
        Optional image of the same shape for ``mean_intensity``.
    store
        When ``labels`` is a dataset, write the table into it as the commit ``label_stats``.
    """
    ds = open_volume(labels, mode="r+") if isinstance(labels, (str, os.PathLike)) else labels
    lab = source_array(ds)
    img = source_array(image) if image is not None else None
    if img is not None and tuple(img.shape) != tuple(lab.shape):
        raise ValueError(f"image shape {tuple(img.shape)} does not match the label volume's {tuple(lab.shape)}")
    block = tuple(getattr(lab, "shards", None) or getattr(lab, "chunks", None) or (64, 64, 64))
    chunk = dask.delayed(_chunk_stats, pure=False)
    combine = dask.delayed(combine_label_stats, pure=False)
    level = [chunk(lab, img, box) for box in block_grid(lab.shape, block).values()]
    while len(level) > fan_in:
        level = [combine(level[i:i + fan_in]) for i in range(0, len(level), fan_in)]
    parts = run_tasks(level, client, "label stats", progress)
    table = stats_table(combine_label_stats(parts), with_intensity=img is not None)
    if store and isinstance(ds, Dataset):
        with ds.commits.begin("label_stats", {"columns": list(table.columns)}) as pending:
            for col in table.columns:
                values = table[col].to_numpy()
                pending.write(col, values, dims=("label",), chunks=(max(min(len(values), 2**20), 1),))
    return table


def read_label_stats(ds: Dataset | str) -> pd.DataFrame:
    """The newest stored ``label_stats`` table of a label volume."""
    ds = open_volume(ds) if isinstance(ds, (str, os.PathLike)) else ds
    group = ds.commits.open("label_stats")
    return pd.DataFrame({c: np.asarray(group[c][...]) for c in COLUMNS if c in group})


def _apply_lut(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return relabel(block, lut)


def remove_dust(labels: Dataset | str, out: str | os.PathLike[str], min_size: int, *,
                stats: pd.DataFrame | None = None, consecutive: bool = False, client: Any = None,
                progress: bool = True) -> Dataset:
    """Write a copy of a label volume without the objects smaller than ``min_size`` voxels.

    ``consecutive`` renumbers the survivors ``1..n``; otherwise they keep their ids.
    """
    ds = open_volume(labels) if isinstance(labels, (str, os.PathLike)) else labels
    if stats is None:
        stats = label_stats(ds, client=client, store=False, progress=progress)
    ids = stats["label"].to_numpy()
    keep = ids[stats["count"].to_numpy() >= min_size]
    top = int(ids.max()) if len(ids) else 0
    lut = np.zeros(top + 1, dtype=ds["0"].dtype)
    lut[keep] = np.arange(1, len(keep) + 1) if consecutive else keep
    result = blockwise(ds, _apply_lut, out, dtype=ds["0"].dtype, labels=True, kwargs={"lut": lut},
                       client=client, progress=progress, desc="remove dust")
    result.update_attrs(dust={"min_size": int(min_size), "kept": int(len(keep)), "removed": int(len(ids) - len(keep))})
    return result
