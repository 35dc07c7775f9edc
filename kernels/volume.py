"""Chunk kernels for (z, y, x) volumes: connected components, boundary equivalences, relabelling.

All loops are ``numba.njit(nogil=True, cache=True)``, so Dask's threaded
workers label chunks truly in parallel (cc3d holds the GIL). Labels inside a
chunk are consecutive ``1..n`` in raster order of each component's first voxel,
the same convention as ``cc3d.connected_components``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = [
    "CONNECTIVITIES",
    "boundary_pairs",
    "combine_label_stats",
    "distance_transform",
    "downsample_mean",
    "downsample_mode",
    "forward_deltas",
    "gaussian",
    "gaussian_radius",
    "label_chunk",
    "label_stats_chunk",
    "neighbour_offsets",
    "plane_pairs",
    "relabel",
    "synthetic_segmentation",
    "threshold",
    "watershed",
]

CONNECTIVITIES = (6, 18, 26)

try:
    import cc3d as _cc3d  # noqa: F401

    _HAVE_CC3D = True
except ImportError:
    _HAVE_CC3D = False


def _order(connectivity: int) -> int:
    """How many axes a neighbour offset may change: 1 (6-), 2 (18-) or 3 (26-connectivity)."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    return {6: 1, 18: 2, 26: 3}[connectivity]


def neighbour_offsets(connectivity: int) -> np.ndarray:
    """The raster-backward neighbour offsets ``(dz, dy, dx)`` of a connectivity, shape (k, 3)."""
    order = _order(connectivity)
    out = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
           if (dz, dy, dx) < (0, 0, 0) and abs(dz) + abs(dy) + abs(dx) <= order]
    return np.array(out, dtype=np.int64)


def forward_deltas(connectivity: int) -> list[tuple[int, int, int]]:
    """Chunk-grid offsets of the neighbours a chunk shares voxels pairs with, counted once per pair."""
    order = _order(connectivity)
    return [d for d in ((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            if d > (0, 0, 0) and sum(map(abs, d)) <= order]


@numba.njit(nogil=True, cache=True)
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@numba.njit(nogil=True, cache=True)
def _union(parent: np.ndarray, a: int, b: int) -> int:
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    if rb < ra:
        parent[ra] = rb
    return rb


@numba.njit(nogil=True, cache=True)
def _label(values: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> int:
    nz, ny, nx = values.shape
    parent = np.empty(4096, dtype=np.int64)
    parent[0] = 0
    nprov = 0
    k = offsets.shape[0]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = values[z, y, x]
                if v == 0:
                    out[z, y, x] = 0
                    continue
                cur = np.int64(0)
                if x > 0 and values[z, y, x - 1] == v:
                    cur = np.int64(out[z, y, x - 1])
                for j in range(k):
                    dz, dy, dx = offsets[j, 0], offsets[j, 1], offsets[j, 2]
                    if dz == 0 and dy == 0:
                        continue
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if zz < 0 or yy < 0 or xx < 0 or xx >= nx or yy >= ny:
                        continue
                    if values[zz, yy, xx] != v:
                        continue
                    other = out[zz, yy, xx]
                    if cur == 0:
                        cur = other
                    elif other != cur:
                        cur = _union(parent, cur, other)
                if cur == 0:
                    nprov += 1
                    if nprov >= parent.shape[0]:
                        grown = np.empty(parent.shape[0] * 2, dtype=np.int64)
                        grown[: parent.shape[0]] = parent
                        parent = grown
                    parent[nprov] = nprov
                    cur = nprov
                out[z, y, x] = cur
    remap = np.zeros(nprov + 1, dtype=np.int64)
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                p = out[z, y, x]
                if p == 0:
                    continue
                r = _find(parent, p)
                if remap[r] == 0:
                    n += 1
                    remap[r] = n
                out[z, y, x] = remap[r]
    return n


def label_chunk(block: Any, connectivity: int = 26, binary: bool = False,
                method: str = "auto") -> tuple[np.ndarray, int]:
    """Label the connected components of one chunk.

    Parameters
    ----------
    block
        A 3-D integer or boolean array. Zero is background.
    connectivity
        6, 18 or 26.
    binary
        Connect any two nonzero neighbours; otherwise (multi-label) only
        neighbours with equal values.
    method
        ``"numba"`` (releases the GIL: threads scale), ``"cc3d"`` (about 5x
        faster on connectomics labels but holds the GIL: use process workers),
        ``"cupy"`` (the CUDA twin; numpy in, numpy out) or ``"auto"``: cc3d when
        it is installed. Cupy input always runs on the GPU and returns cupy.

    Returns
    -------
    labels, n
        ``uint32`` labels ``1..n`` in raster order of first voxel, and ``n``.
    """
    xp = _array_module(block)
    if xp is not np:
        from .volume_gpu import label_chunk_gpu

        return label_chunk_gpu(block, connectivity, binary)
    if method == "cupy":
        import cupy

        from .volume_gpu import label_chunk_gpu

        labels, n = label_chunk_gpu(cupy.asarray(block), connectivity, binary)
        return labels.get(), n
    block = np.asarray(block)
    if block.ndim != 3:
        raise ValueError(f"label_chunk needs a 3-D block, got shape {block.shape}")
    values = (block != 0).view(np.uint8) if (binary or block.dtype == np.bool_) else block
    if values.dtype.kind not in "iu":
        raise ValueError(f"label_chunk needs integer or boolean voxels, got {block.dtype}")
    if method == "auto":
        method = "cc3d" if _HAVE_CC3D else "numba"
    if method == "cc3d":
        import cc3d

        # cc3d mislabels some strided views (seen with cc3d 4.1.1 on (n, 1, 1) slices)
        out, n = cc3d.connected_components(np.ascontiguousarray(values), connectivity=connectivity, return_N=True,
                                           out_dtype=np.uint32)
        return out, int(n)
    if method != "numba":
        raise ValueError(f"label method must be 'auto', 'numba', 'cc3d' or 'cupy', not {method!r}")
    from .runs import label_runs

    _order(connectivity)
    runs = label_runs(np.ascontiguousarray(values), connectivity)
    return runs.paint(), runs.n


@numba.njit(nogil=True, cache=True)
def _pairs(a_lab: np.ndarray, a_val: np.ndarray, b_lab: np.ndarray, b_val: np.ndarray,
           fixed: np.ndarray, order: int, binary: bool) -> np.ndarray:
    nz, ny, nx = a_lab.shape
    cap = 1024
    out = np.empty((cap, 2), dtype=np.int64)
    m = 0
    base = fixed[0] + fixed[1] + fixed[2]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                la = a_lab[z, y, x]
                if la == 0:
                    continue
                for dz in range(-1, 2):
                    if dz != 0 and fixed[0]:
                        continue
                    zz = z + dz
                    if zz < 0 or zz >= nz:
                        continue
                    for dy in range(-1, 2):
                        if dy != 0 and fixed[1]:
                            continue
                        yy = y + dy
                        if yy < 0 or yy >= ny:
                            continue
                        for dx in range(-1, 2):
                            if dx != 0 and fixed[2]:
                                continue
                            if base + abs(dz) + abs(dy) + abs(dx) > order:
                                continue
                            xx = x + dx
                            if xx < 0 or xx >= nx:
                                continue
                            lb = b_lab[zz, yy, xx]
                            if lb == 0:
                                continue
                            if not binary and a_val[z, y, x] != b_val[zz, yy, xx]:
                                continue
                            if m > 0 and out[m - 1, 0] == la and out[m - 1, 1] == lb:
                                continue
                            if m == cap:
                                grown = np.empty((cap * 2, 2), dtype=np.int64)
                                grown[:cap] = out
                                out = grown
                                cap *= 2
                            out[m, 0] = la
                            out[m, 1] = lb
                            m += 1
    return out[:m]


def boundary_pairs(a_lab: np.ndarray, a_val: np.ndarray, b_lab: np.ndarray, b_val: np.ndarray,
                   delta: tuple[int, int, int], connectivity: int = 26, binary: bool = False) -> np.ndarray:
    """Equivalent label pairs across the boundary between two neighbouring chunks.

    ``a_*`` and ``b_*`` are the facing voxels of chunk ``A`` and of its neighbour
    ``B = A + delta`` (one voxel thick along each axis where ``delta`` is nonzero,
    the shared extent elsewhere): a face, an edge or a corner. Voxels are paired
    across the boundary with in-plane offsets allowed by the connectivity.

    Returns
    -------
    ``int64`` array (m, 2) of unique ``(label in A, label in B)`` pairs.
    """
    if a_lab.shape != b_lab.shape:
        raise ValueError(f"facing blocks differ in shape: {a_lab.shape} vs {b_lab.shape}")
    fixed = np.array([d != 0 for d in delta], dtype=np.int64)
    # faces are small: one canonical dtype keeps numba to a single compiled specialisation
    a_lab, b_lab = (np.ascontiguousarray(v, dtype=np.int64) for v in (a_lab, b_lab))
    a_val, b_val = (np.ascontiguousarray(v).astype(np.int64) for v in (a_val, b_val))
    pairs = _pairs(a_lab, a_val, b_lab, b_val, fixed, _order(connectivity), binary)
    if len(pairs) == 0:
        return pairs
    key = np.unique((pairs[:, 0] << 32) | pairs[:, 1])  # labels < 2**32: one sortable key per pair
    return np.stack([key >> 32, key & 0xFFFFFFFF], axis=1)


def plane_pairs(a_lab: Any, a_val: Any, b_lab: Any, b_val: Any, connectivity: int = 26,
                binary: bool = False) -> np.ndarray:
    """Equivalent label pairs between plane ``a`` (z) and the next plane ``b`` (z + 1) of one volume.

    The array module follows the input (cupy planes are paired on the GPU);
    the pairs come back as a host ``int64`` array (m, 2) of unique
    ``(label in a, label in b)``. Labels must be below 2**32.
    """
    if a_lab.shape != b_lab.shape or a_lab.ndim != 2:
        raise ValueError(f"plane_pairs needs two planes of one shape, got {a_lab.shape} and {b_lab.shape}")
    xp = _array_module(a_lab)
    order = _order(connectivity)
    ny, nx = a_lab.shape
    keys = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if 1 + abs(dy) + abs(dx) > order:
                continue
            sa = (slice(max(0, -dy), ny - max(0, dy)), slice(max(0, -dx), nx - max(0, dx)))
            sb = (slice(max(0, dy), ny - max(0, -dy)), slice(max(0, dx), nx - max(0, -dx)))
            la, lb = a_lab[sa], b_lab[sb]
            hit = (la != 0) & (lb != 0)
            if not binary:
                hit &= a_val[sa] == b_val[sb]
            keys.append((la[hit].astype(xp.int64) << 32) | lb[hit].astype(xp.int64))
    key = xp.unique(xp.concatenate(keys))
    key = key.get() if xp is not np else key
    return np.stack([key >> 32, key & 0xFFFFFFFF], axis=1).astype(np.int64)


@numba.njit(nogil=True, cache=True)
def _gather(labels: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    for i in range(labels.size):
        out[i] = lut[labels[i]]


def relabel(labels: Any, lut: Any) -> Any:
    """Map labels through a lookup table (``lut[0]`` should be 0); array module follows the input."""
    if _array_module(labels) is not np:
        return lut[labels]
    labels = np.ascontiguousarray(labels)
    if labels.size and int(labels.max()) >= len(lut):
        raise ValueError(f"label {int(labels.max())} is outside the lookup table of {len(lut)} entries")
    out = np.empty(labels.shape, dtype=lut.dtype)
    _gather(labels.reshape(-1), np.ascontiguousarray(lut), out.reshape(-1))
    return out


def _array_module(x: Any) -> Any:
    mod = type(x).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    return np


def downsample_mean(block: Any, factors: tuple[int, int, int] = (2, 2, 2)) -> Any:
    """Mean over ``factors`` boxes; a partial box at the block's end averages the voxels it has.

    Integer images are rounded back to their dtype. The array module follows the input.
    """
    xp = _array_module(block)
    shape = tuple(-(-s // f) for s, f in zip(block.shape, factors, strict=True))
    acc = xp.zeros(shape, dtype=xp.float64)
    cnt = xp.zeros(shape, dtype=xp.float64)
    for dz in range(factors[0]):
        for dy in range(factors[1]):
            for dx in range(factors[2]):
                part = block[dz::factors[0], dy::factors[1], dx::factors[2]]
                sl = tuple(slice(0, s) for s in part.shape)
                acc[sl] += part
                cnt[sl] += 1
    mean = acc / cnt
    if np.dtype(block.dtype).kind in "iub":
        return xp.rint(mean).astype(block.dtype)
    return mean.astype(block.dtype)


@numba.njit(nogil=True, cache=True)
def _mode(block: np.ndarray, fz: int, fy: int, fx: int, out: np.ndarray) -> None:
    nz, ny, nx = block.shape
    vals = np.empty(fz * fy * fx, dtype=block.dtype)
    for z in range(out.shape[0]):
        for y in range(out.shape[1]):
            for x in range(out.shape[2]):
                m = 0
                for a in range(z * fz, min(z * fz + fz, nz)):
                    for b in range(y * fy, min(y * fy + fy, ny)):
                        for c in range(x * fx, min(x * fx + fx, nx)):
                            vals[m] = block[a, b, c]
                            m += 1
                best, best_n = vals[0], 0
                for i in range(m):
                    k = 0
                    for j in range(m):
                        if vals[j] == vals[i]:
                            k += 1
                    if k > best_n or (k == best_n and vals[i] < best):
                        best, best_n = vals[i], k
                out[z, y, x] = best


def downsample_mode(block: np.ndarray, factors: tuple[int, int, int] = (2, 2, 2)) -> np.ndarray:
    """Most frequent label in each ``factors`` box (ties: the smallest label), for label pyramids."""
    block = np.ascontiguousarray(block)
    out = np.empty(tuple(-(-s // f) for s, f in zip(block.shape, factors, strict=True)), dtype=block.dtype)
    _mode(block, factors[0], factors[1], factors[2], out)
    return out


@numba.njit(nogil=True, cache=True)
def _slot(keys: np.ndarray, key: np.int64) -> int:
    # open addressing with linear probing: the slot holding ``key``, or the empty slot where it belongs
    mask = keys.shape[0] - 1
    i = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    i = np.int64(i) & mask
    while keys[i] != -1 and keys[i] != key:
        i = (i + 1) & mask
    return i


@numba.njit(nogil=True, cache=True)
def _stats(labels: np.ndarray, image: np.ndarray, use_image: bool, z0: int, y0: int, x0: int) -> tuple:
    keys = np.full(1024, -1, dtype=np.int64)
    rows = np.empty(1024, dtype=np.int64)
    cap = 64
    ids = np.empty(cap, dtype=np.int64)
    acc = np.zeros((cap, 5), dtype=np.float64)  # count, sum z, sum y, sum x, sum intensity
    box = np.empty((cap, 6), dtype=np.int64)
    n = 0
    last, li = np.int64(-1), 0
    for z in range(labels.shape[0]):
        for y in range(labels.shape[1]):
            for x in range(labels.shape[2]):
                lab = np.int64(labels[z, y, x])
                if lab == 0:
                    continue
                gz, gy, gx = z + z0, y + y0, x + x0
                if lab != last:
                    slot = _slot(keys, lab)
                    if keys[slot] == lab:
                        li = rows[slot]
                    else:
                        if n == cap:
                            ids = np.concatenate((ids, np.empty(cap, dtype=np.int64)))
                            acc = np.concatenate((acc, np.zeros((cap, 5), dtype=np.float64)))
                            box = np.concatenate((box, np.empty((cap, 6), dtype=np.int64)))
                            cap *= 2
                        li = n
                        keys[slot], rows[slot] = lab, li
                        ids[li] = lab
                        box[li, 0], box[li, 1], box[li, 2] = gz, gy, gx
                        box[li, 3], box[li, 4], box[li, 5] = gz, gy, gx
                        n += 1
                        if 2 * n > keys.shape[0]:  # keep the table at most half full
                            old_keys, old_rows = keys, rows
                            keys = np.full(old_keys.shape[0] * 2, -1, dtype=np.int64)
                            rows = np.empty(old_keys.shape[0] * 2, dtype=np.int64)
                            for j in range(old_keys.shape[0]):
                                if old_keys[j] != -1:
                                    s2 = _slot(keys, old_keys[j])
                                    keys[s2], rows[s2] = old_keys[j], old_rows[j]
                    last = lab
                acc[li, 0] += 1
                acc[li, 1] += gz
                acc[li, 2] += gy
                acc[li, 3] += gx
                if use_image:
                    acc[li, 4] += image[z, y, x]
                box[li, 0] = min(box[li, 0], gz)
                box[li, 1] = min(box[li, 1], gy)
                box[li, 2] = min(box[li, 2], gx)
                box[li, 3] = max(box[li, 3], gz)
                box[li, 4] = max(box[li, 4], gy)
                box[li, 5] = max(box[li, 5], gx)
    return ids[:n], acc[:n], box[:n]


def label_stats_chunk(labels: np.ndarray, image: np.ndarray | None = None,
                      offset: tuple[int, int, int] = (0, 0, 0)) -> dict[str, np.ndarray]:
    """Sufficient statistics of every label in one block, in global coordinates.

    Returns ``label``, ``count``, ``sum_zyx`` (n, 3), ``sum_intensity``,
    ``bbox_min`` and ``bbox_max`` (n, 3, inclusive); blocks combine with
    :func:`combine_label_stats`.
    """
    use = image is not None
    img = np.ascontiguousarray(image, dtype=np.float64) if use else np.zeros((1, 1, 1), dtype=np.float64)
    if use and img.shape != labels.shape:
        raise ValueError(f"image block {img.shape} does not match label block {labels.shape}")
    lab = np.ascontiguousarray(labels, dtype=np.int64 if np.dtype(labels.dtype).kind == "i" else np.uint64)
    ids, acc, box = _stats(lab, img, use, *map(int, offset))
    return {"label": ids, "count": acc[:, 0].astype(np.int64), "sum_zyx": acc[:, 1:4],
            "sum_intensity": acc[:, 4], "bbox_min": box[:, :3], "bbox_max": box[:, 3:]}


def combine_label_stats(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge per-block statistics into one row per label (sorted by label)."""
    parts = [p for p in parts if len(p["label"])]
    if not parts:
        return label_stats_chunk(np.zeros((1, 1, 1), np.uint8))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    labels, inv = np.unique(cat["label"], return_inverse=True)
    n = len(labels)
    out = {"label": labels, "count": np.bincount(inv, cat["count"], n).astype(np.int64),
           "sum_zyx": np.stack([np.bincount(inv, cat["sum_zyx"][:, i], n) for i in range(3)], axis=1),
           "sum_intensity": np.bincount(inv, cat["sum_intensity"], n)}
    lo = np.full((n, 3), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n, 3), -1, dtype=np.int64)
    np.minimum.at(lo, inv, cat["bbox_min"])
    np.maximum.at(hi, inv, cat["bbox_max"])
    out["bbox_min"], out["bbox_max"] = lo, hi
    return out


def _ndimage(xp: Any) -> Any:
    if xp is np:
        from scipy import ndimage

        return ndimage
    from cupyx.scipy import ndimage

    return ndimage


def gaussian_radius(sigma: float | tuple[float, ...], truncate: float = 4.0) -> tuple[int, int, int]:
    """The halo a Gaussian needs for exact results: scipy's kernel radius ``int(truncate * sigma + 0.5)``."""
    sig = (sigma,) * 3 if np.isscalar(sigma) else tuple(sigma)
    return tuple(int(truncate * float(s) + 0.5) for s in sig)  # type: ignore[return-value]


def gaussian(block: Any, sigma: float | tuple[float, ...] = 1.0, truncate: float = 4.0) -> Any:
    """Gaussian smoothing in float32 (scipy or cupyx, following the input)."""
    xp = _array_module(block)
    return _ndimage(xp).gaussian_filter(block.astype(xp.float32), sigma, truncate=truncate, mode="reflect")


def threshold(block: Any, level: float, above: bool = True) -> Any:
    """``uint8`` mask of voxels above (or at most) ``level``."""
    mask = block > level if above else block <= level
    return mask.astype(np.uint8)


def distance_transform(block: Any, max_distance: float, sampling: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Any:
    """Euclidean distance of each nonzero voxel to the nearest zero voxel, capped at ``max_distance``.

    With a halo of ``ceil(max_distance / min(sampling))`` voxels the capped
    distance equals the whole-volume transform's (capped the same way).
    """
    xp = _array_module(block)
    fg = block != 0
    if bool(fg.all()):
        return xp.full(block.shape, max_distance, dtype=xp.float32)
    d = _ndimage(xp).distance_transform_edt(fg, sampling=sampling)
    return xp.minimum(d, max_distance).astype(xp.float32)


def watershed(boundary: Any, markers: Any, mask_level: float | None = None) -> Any:
    """Seeded watershed of a boundary (or inverted affinity) map from ``markers`` (skimage; CPU only).

    Voxels with ``boundary >= mask_level`` stay background when ``mask_level`` is given.
    """
    from skimage.segmentation import watershed as sk_watershed

    boundary = np.asarray(boundary)
    mask = None if mask_level is None else boundary < mask_level
    return sk_watershed(boundary, np.asarray(markers), mask=mask)


@numba.njit(nogil=True, cache=True)
def _hash(seed: np.uint64, a: np.int64, b: np.int64, c: np.int64) -> np.uint64:
    # splitmix64 over (seed, a, b, c): a counter-based draw, identical for every chunking
    h = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    for v in (a, b, c):
        h ^= np.uint64(v + 0x632BE59BD9B4E019)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


@numba.njit(nogil=True, cache=True)
def _synthetic(out: np.ndarray, z0: int, y0: int, x0: int, seed: np.uint64, cell: int, stretch: int,
               membrane: float, axon_every: int, axon_radius: float) -> None:
    nz, ny, nx = out.shape
    cz, cy, cx = cell * stretch, cell, cell
    unit = np.float64(1 << 24)
    # seeds of every cell the block can see, drawn once per block
    iz0, iy0, ix0 = z0 // cz - 1, y0 // cy - 1, x0 // cx - 1
    mz, my, mx = (z0 + nz - 1) // cz + 2 - iz0, (y0 + ny - 1) // cy + 2 - iy0, (x0 + nx - 1) // cx + 2 - ix0
    pos = np.empty((mz, my, mx, 3), dtype=np.float64)
    val = np.empty((mz, my, mx), dtype=np.uint8)
    for i in range(mz):
        for j in range(my):
            for k in range(mx):
                h = _hash(seed, i + iz0, j + iy0, k + ix0)
                pos[i, j, k, 0] = ((i + iz0) * cz + cz * (np.float64(h & np.uint64(0xFFFFFF)) / unit)) / stretch
                pos[i, j, k, 1] = (j + iy0) * cy + cy * (np.float64((h >> np.uint64(24)) & np.uint64(0xFFFFFF)) / unit)
                pos[i, j, k, 2] = (k + ix0) * cx + cx * (np.float64((h >> np.uint64(48)) & np.uint64(0xFFFF)) / 65536.0)
                val[i, j, k] = 1 + (h >> np.uint64(8)) % np.uint64(255)
    # axons: wavy tubes along z, one per column of ``4 * cell`` in y and x where the hash says so
    ac = cell * 4
    ja, ka = y0 // ac - 1, x0 // ac - 1
    na, ma = (y0 + ny - 1) // ac + 2 - ja, (x0 + nx - 1) // ac + 2 - ka
    ax_on = np.zeros((na, ma), dtype=np.bool_)
    ax_ph = np.zeros((na, ma), dtype=np.float64)
    ax_val = np.zeros((na, ma), dtype=np.uint8)
    for j in range(na):
        for k in range(ma):
            h = _hash(seed, -1, j + ja, k + ka)
            ax_on[j, k] = h % np.uint64(axon_every) == 0
            ax_ph[j, k] = np.float64(h >> np.uint64(40)) / unit * 6.283
            ax_val[j, k] = 1 + (h >> np.uint64(8)) % np.uint64(255)
    cy_ = np.empty((na, ma), dtype=np.float64)
    cx_ = np.empty((na, ma), dtype=np.float64)
    r2 = axon_radius * axon_radius
    for z in range(nz):
        gz = z + z0
        for j in range(na):
            for k in range(ma):
                cy_[j, k] = (j + ja) * ac + ac / 2 + 0.8 * cell * np.sin(gz / (3.0 * cell) + ax_ph[j, k])
                cx_[j, k] = (k + ka) * ac + ac / 2 + 0.8 * cell * np.cos(gz / (4.0 * cell) + ax_ph[j, k])
        fz = gz / stretch
        iz = gz // cz - iz0
        for y in range(ny):
            gy = y + y0
            iy = gy // cy - iy0
            jy = gy // ac - ja
            for x in range(nx):
                gx = x + x0
                kx = gx // ac - ka
                hit = np.uint8(0)
                for j in range(jy - 1, jy + 2):
                    for k in range(kx - 1, kx + 2):
                        if ax_on[j, k] and (gy - cy_[j, k]) ** 2 + (gx - cx_[j, k]) ** 2 <= r2:
                            hit = ax_val[j, k]
                if hit != 0:
                    out[z, y, x] = hit
                    continue
                ix = gx // cx - ix0
                d1, d2 = 1e30, 1e30
                best = np.uint8(0)
                # the 2x2x2 cells nearest the voxel: an approximate, but chunking-independent, tessellation
                sz_ = iz - 1 if 2 * (gz % cz) < cz else iz
                sy_ = iy - 1 if 2 * (gy % cy) < cy else iy
                sx_ = ix - 1 if 2 * (gx % cx) < cx else ix
                for i in range(sz_, sz_ + 2):
                    for j in range(sy_, sy_ + 2):
                        for k in range(sx_, sx_ + 2):
                            d = (fz - pos[i, j, k, 0]) ** 2 + (gy - pos[i, j, k, 1]) ** 2 + (gx - pos[i, j, k, 2]) ** 2
                            if d < d1:
                                d2 = d1
                                d1 = d
                                best = val[i, j, k]
                            elif d < d2:
                                d2 = d
                out[z, y, x] = 0 if np.sqrt(d2) - np.sqrt(d1) < membrane else best


def synthetic_segmentation(shape: tuple[int, int, int], offset: tuple[int, int, int] = (0, 0, 0), seed: int = 0,
                           cell: int = 24, stretch: int = 4, membrane: float = 1.0, axon_every: int = 3,
                           axon_radius: float = 4.0) -> np.ndarray:
    """A block of a procedural connectomics-like ``uint8`` segmentation at ``offset`` of an endless volume.

    Neurite fragments are Voronoi cells (about ``cell`` voxels across, ``stretch`` times longer in z)
    separated by membranes (value 0); wavy axons run through the whole z extent. Values are
    1..255, so neighbouring objects sometimes share one and merge, as in uint8 label data. Every
    block is a pure function of its global coordinates: any chunking of one volume agrees.
    """
    out = np.empty(shape, dtype=np.uint8)
    _synthetic(out, *map(int, offset), np.uint64(seed), int(cell), int(stretch), float(membrane), int(axon_every),
               float(axon_radius))
    return out
