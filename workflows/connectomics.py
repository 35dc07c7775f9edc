"""Connectomics volumes: ingest, pyramids, global connected components, per-label statistics, dust.

``run`` takes an image (PNG/TIFF stack, HDF5, Zarr, N5) and optionally a label
volume; without labels it segments the image by smoothing and thresholding
(``threshold``), and without an image it generates a procedural
connectomics-like segmentation. Every result is an OME-Zarr volume under the
store URL: ``image.zarr``, ``labels.zarr``, ``components.zarr`` (global
connected components), ``clean.zarr`` (components without dust); the
per-label table is stored in ``components.zarr`` as the commit ``label_stats``.
``neurochunk plot URL`` draws orthogonal slices of any volume with its labels
overlaid.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from neurochunk.stores import Dataset

from .config import ConfigError, Field, Section
from .figures import save_figure

__all__ = ["PARAMS", "run", "plot", "check"]

PARAMS = Section({
    "image": Field(str, help="image source: PNG/TIFF folder or glob, .h5[:dataset], Zarr or N5; none = synthetic"),
    "labels": Field(str, help="label source (same kinds); none = threshold the image, or synthetic"),
    "labels_transforms": Field(str, help="HDF5 labels: an (n, 2) dataset mapping stored ids to bodies"),
    "voxel_size": Field(list, [1.0, 1.0, 1.0], items=(int, float), help="z, y, x voxel size"),
    "unit": Field(str, "nanometer"),
    "image_chunk": Field(int, 128, help="chunk edge of image volumes"),
    "label_chunk": Field(int, 64, help="chunk edge of label volumes (and the CC block)"),
    "synthetic_size": Field(int, 256, help="edge of the synthetic volume when no image is given"),
    "connectivity": Field(int, 26, choices=(6, 18, 26)),
    "binary": Field(bool, False, help="connect any nonzero neighbours (else only equal labels)"),
    "method": Field(str, "auto", choices=("auto", "cc3d", "numba", "cupy", "cupy-resident"),
                    help="chunk labeller; cupy-resident: label once with the labels resident on the GPU"),
    "sigma": Field(float, 1.0, help="Gaussian smoothing before thresholding (no labels given)"),
    "threshold": Field(float, help="segment the image where smoothed intensity is above this"),
    "min_size": Field(int, 100, help="objects smaller than this many voxels are dust"),
    "pyramid_min_size": Field(int, 32, help="build levels until the largest axis is at most this"),
})


def check(cfg: dict[str, Any]) -> None:
    """Cross-field checks of a connectomics config."""
    p = cfg["params"]
    src = cfg.get("_source", "<config>")
    if len(p["voxel_size"]) != 3 or min(p["voxel_size"]) <= 0:
        raise ConfigError(src, "params.voxel_size", f"needs 3 positive numbers (z, y, x), got {p['voxel_size']}")
    if p["image"] is None and p["labels"] is None and p["threshold"] is not None:
        raise ConfigError(src, "params.threshold", "needs an image to threshold")


def run(cfg: dict[str, Any], client: Any) -> dict[str, Any]:
    """Ingest, build pyramids, label components, measure them and remove dust; return a summary."""
    from neurochunk.kernels.volume import synthetic_segmentation
    from neurochunk.pipeline import filters
    from neurochunk.pipeline.components import connected_components
    from neurochunk.pipeline.ingest import ingest
    from neurochunk.pipeline.labelstats import label_stats, remove_dust
    from neurochunk.pipeline.pyramid import build_pyramid

    p = cfg["params"]
    progress = cfg.get("progress", True)
    root = ((cfg.get("store") or {}).get("url") or tempfile.mkdtemp(prefix="neurochunk-connectomics-")).rstrip("/")
    vs = tuple(float(v) for v in p["voxel_size"])
    common = {"voxel_size": vs, "unit": p["unit"], "client": client, "progress": progress}
    lchunks = (p["label_chunk"],) * 3
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 3)
        return out

    image = None
    if p["image"] is not None:
        image = timed("ingest_image", lambda: ingest(p["image"], f"{root}/image.zarr",
                                                     chunks=(p["image_chunk"],) * 3, **common))
        timed("pyramid_image", lambda: build_pyramid(image, min_size=p["pyramid_min_size"], client=client,
                                                     progress=progress))
    if p["labels"] is not None:
        labels = timed("ingest_labels", lambda: ingest(p["labels"], f"{root}/labels.zarr", labels=True,
                                                       transforms=p["labels_transforms"], chunks=lchunks, **common))
    elif image is not None:
        if p["threshold"] is None:
            raise ValueError("connectomics: give params.labels or params.threshold to segment the image")
        smooth = timed("gaussian", lambda: filters.gaussian(image, f"{root}/smooth.zarr", p["sigma"], client=client,
                                                           progress=progress))
        labels = timed("threshold", lambda: filters.threshold(smooth, f"{root}/labels.zarr", p["threshold"],
                                                             chunks=lchunks, client=client, progress=progress))
    else:
        n = p["synthetic_size"]
        source = _Synthetic((n, n, n))
        labels = timed("synthesize_labels", lambda: ingest(source, f"{root}/labels.zarr", labels=True,
                                                           chunks=lchunks, **common))
        del synthetic_segmentation
    if p["method"] == "cupy-resident":
        from neurochunk.pipeline.resident import connected_components_resident

        comps = timed("connected_components", lambda: connected_components_resident(
            labels, f"{root}/components.zarr", connectivity=p["connectivity"], binary=p["binary"], chunks=lchunks))
    else:
        comps = timed("connected_components", lambda: connected_components(
            labels, f"{root}/components.zarr", connectivity=p["connectivity"], binary=p["binary"],
            method=p["method"], chunks=lchunks, client=client, progress=progress, resume=False))
    if image is not None:
        comps.update_attrs(image=str(image.url))
    timed("pyramid_components", lambda: build_pyramid(comps, min_size=p["pyramid_min_size"], client=client,
                                                      progress=progress))
    table = timed("label_stats", lambda: label_stats(comps, image, client=client, progress=progress))
    clean = timed("remove_dust", lambda: remove_dust(comps, f"{root}/clean.zarr", p["min_size"], stats=table,
                                                     client=client, progress=progress))
    if image is not None:
        clean.update_attrs(image=str(image.url))
    shape = tuple(comps["0"].shape)
    voxels = int(np.prod(shape))
    return {
        "root": root, "shape": shape, "n_components": int(comps.attrs["n_labels"]),
        "kept_after_dust": clean.attrs["dust"]["kept"], "timings_s": timings,
        "cc_mvoxels_per_s": round(voxels / timings["connected_components"] / 1e6, 1),
        "largest": table.nlargest(5, "count")[["label", "count", "centroid_z", "centroid_y", "centroid_x"]]
        .round(1).to_dict("records"),
        "plots": plot(clean, root),
    }


class _Synthetic:
    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape, self.dtype = shape, np.dtype(np.uint8)

    def __getitem__(self, box: tuple[slice, ...]) -> np.ndarray:
        from neurochunk.kernels.volume import synthetic_segmentation

        return synthetic_segmentation(tuple(s.stop - s.start for s in box), tuple(s.start for s in box))


def _level_for_plot(ds: Dataset, max_edge: int = 768) -> str:
    from neurochunk.stores.ome import levels

    for path in levels(ds):
        if max(ds[path].shape) <= max_edge:
            return path
    return levels(ds)[-1]


def _label_colours(labels: np.ndarray) -> np.ndarray:
    """An RGBA image with a stable pseudo-random colour per label and transparent background."""
    lab = labels.astype(np.uint64)
    h = (lab * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    rgba = np.empty((*labels.shape, 4), dtype=np.float32)
    for i in range(3):
        rgba[..., i] = ((h >> np.uint64(8 * i)) & np.uint64(255)).astype(np.float32) / 255 * 0.8 + 0.2
    rgba[..., 3] = np.where(labels != 0, 0.45, 0.0)
    return rgba


def plot(ds: Dataset, out_dir: str) -> list[str]:
    """Orthogonal slices (z, y, x through the centre) of a volume; labels overlaid on their image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurochunk.stores.ome import open_volume

    is_labels = ds.attrs.get("role") == "labels"
    image = labels = None
    if is_labels:
        labels = ds
        if ds.attrs.get("image"):
            try:
                image = open_volume(ds.attrs["image"])
            except (FileNotFoundError, ValueError):
                image = None
    else:
        image = ds
    base = labels if labels is not None else image
    assert base is not None
    level = _level_for_plot(base)
    vs = np.asarray(base.attrs.get("voxel_size", [1, 1, 1]), dtype=float) * 2 ** int(level)
    shape = base[level].shape
    c = [s // 2 for s in shape]
    cuts = [("z", (c[0], slice(None), slice(None)), ("x", "y"), (vs[2], vs[1])),
            ("y", (slice(None), c[1], slice(None)), ("x", "z"), (vs[2], vs[0])),
            ("x", (slice(None), slice(None), c[2]), ("y", "z"), (vs[1], vs[0]))]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for ax, (axis, cut, (hname, vname), (hs, vsz)) in zip(axes, cuts, strict=True):
        extent = None
        if image is not None:
            ilevel = level if level in image.names else "0"
            img = np.asarray(image[ilevel][cut])
            extent = (0, img.shape[1] * hs, img.shape[0] * vsz, 0)
            ax.imshow(img, cmap="gray", extent=extent, interpolation="nearest")
        if labels is not None:
            lab = np.asarray(labels[level][cut])
            extent = extent or (0, lab.shape[1] * hs, lab.shape[0] * vsz, 0)
            ax.imshow(_label_colours(lab), extent=extent, interpolation="nearest")
        unit = base.attrs.get("unit", "")
        ax.set(title=f"{axis} = {c['zyx'.index(axis)]} (level {level})", xlabel=f"{hname} ({unit})",
               ylabel=f"{vname} ({unit})")
    n = base.attrs.get("n_labels") or (base.attrs.get("dust") or {}).get("kept")
    fig.suptitle(f"{base.url}" + (f" — {n} labels" if n else ""))
    return [save_figure(fig, out_dir, f"{Path(str(base.url)).stem}_slices.png", dpi=110)]
