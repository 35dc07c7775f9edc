"""Ingest into OME-Zarr, pyramids, per-label statistics and dust removal, on the neuroproof sample."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from neurochunk.pipeline.ingest import ingest
from neurochunk.pipeline.labelstats import label_stats, read_label_stats, remove_dust
from neurochunk.pipeline.pyramid import build_pyramid
from neurochunk.stores import Dataset, SchemaError
from neurochunk.stores.ome import create_volume, levels, open_volume

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neuroproof_training_sample2"
needs_data = pytest.mark.skipif(not (DATA / "grayscale_maps").exists(), reason="neuroproof sample not present")


def _png_stack() -> np.ndarray:
    from PIL import Image

    files = sorted((DATA / "grayscale_maps").glob("*.png"), key=lambda p: int(p.stem.split(".")[-1]))
    return np.stack([np.asarray(Image.open(f)) for f in files])


def _bodies() -> np.ndarray:
    import h5py

    with h5py.File(io.BytesIO(gzip.open(DATA / "groundtruth.h5.gz").read()), "r") as f:
        stack, pairs = f["stack"][...], f["transforms"][...]
    lut = np.zeros(stack.max() + 1, dtype=np.uint32)
    lut[pairs[:, 0]] = pairs[:, 1]
    return lut[stack]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("np")
    image = ingest(DATA / "grayscale_maps", root / "image.zarr", voxel_size=(10, 10, 10), progress=False)
    labels = ingest(str(DATA / "groundtruth.h5.gz") + ":stack", root / "gt.zarr", labels=True,
                    transforms="transforms", voxel_size=(10, 10, 10), progress=False)
    return root, image, labels


@needs_data
def test_ingest_png_stack_is_ome_zarr(sample) -> None:
    root, image, labels = sample
    stack = _png_stack()
    ds = open_volume(root / "image.zarr")  # schema-checked, OME block included
    assert np.array_equal(ds["0"][...], stack)
    assert ds["0"].chunks == (128, 128, 128) and ds["0"].metadata.dimension_names == ("z", "y", "x")
    ome = ds.group.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"] and {a["unit"] for a in ms["axes"]} == {"nanometer"}
    assert ms["datasets"][0]["coordinateTransformations"][0] == {"type": "scale", "scale": [10.0, 10.0, 10.0]}
    assert np.array_equal(labels["0"][...], _bodies())  # superpixels mapped to bodies while ingesting
    assert labels["0"].chunks == (64, 64, 64) and "image-label" in labels.group.attrs["ome"]


@needs_data
def test_pyramid_mean_and_mode(sample) -> None:
    _, image, labels = sample
    stack = image["0"][...]
    assert build_pyramid(image, min_size=32, progress=False) == ["0", "1", "2", "3"]
    l1 = image["1"][...]
    ref = np.rint(stack.reshape(125, 2, 125, 2, 125, 2).astype(float).mean(axis=(1, 3, 5)))
    assert np.array_equal(l1, ref.astype(np.uint8))
    l2 = image["2"][...]
    assert l2.shape == (63, 63, 63)
    assert l2[-1, -1, -1] == np.rint(l1[-1:, -1:, -1:].mean())  # a partial 1-voxel box at the edge
    assert image["3"].shape == (32, 32, 32)
    datasets = image.group.attrs["ome"]["multiscales"][0]["datasets"]
    scales = [d["coordinateTransformations"][0]["scale"][0] for d in datasets]
    assert scales == [10.0, 20.0, 40.0, 80.0]
    assert Dataset.open(image.url, kind="volume").validate("volume")

    gt = labels["0"][...]
    build_pyramid(labels, min_size=100, progress=False)
    assert levels(labels) == ["0", "1", "2"]
    m1 = labels["1"][...]
    blocks = gt.reshape(125, 2, 125, 2, 125, 2).transpose(0, 2, 4, 1, 3, 5).reshape(-1, 8)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(blocks), 2000, replace=False):
        vals, counts = np.unique(blocks[i], return_counts=True)
        assert m1.reshape(-1)[i] == vals[counts == counts.max()].min()


@needs_data
def test_label_stats_against_numpy(sample) -> None:
    _, image, labels = sample
    gt, img = labels["0"][...], image["0"][...].astype(np.float64)
    table = label_stats(labels, image, progress=False).set_index("label")
    ids = np.unique(gt)
    ids = ids[ids != 0]
    assert list(table.index) == list(ids)
    count = np.bincount(gt.ravel())
    assert np.array_equal(table["count"].to_numpy(), count[ids])
    np.testing.assert_allclose(table["mean_intensity"], np.bincount(gt.ravel(), img.ravel())[ids] / count[ids])
    zz = np.broadcast_to(np.arange(250)[:, None, None], gt.shape).ravel()
    np.testing.assert_allclose(table["centroid_z"], np.bincount(gt.ravel(), zz)[ids] / count[ids])
    boxes = ndimage.find_objects(gt)
    for lab in ids[:: max(len(ids) // 500, 1)]:
        sl = boxes[lab - 1]
        row = table.loc[lab]
        assert (row.z_min, row.y_min, row.x_min) == tuple(s.start for s in sl)
        assert (row.z_max, row.y_max, row.x_max) == tuple(s.stop - 1 for s in sl)
    stored = read_label_stats(labels)
    assert np.array_equal(stored["count"].to_numpy(), table["count"].to_numpy())


@needs_data
def test_remove_dust(sample) -> None:
    root, _, labels = sample
    gt = labels["0"][...]
    out = remove_dust(labels, root / "clean.zarr", 500, progress=False)
    count = np.bincount(gt.ravel())
    expected = np.where(count[gt] < 500, 0, gt)
    expected[gt == 0] = 0
    assert np.array_equal(out["0"][...], expected)
    assert out.attrs["dust"]["kept"] == int(((count >= 500) & (np.arange(len(count)) > 0)).sum())
    cons = remove_dust(labels, root / "clean2.zarr", 500, consecutive=True, progress=False)["0"][...]
    assert cons.max() == out.attrs["dust"]["kept"] and np.array_equal(cons != 0, expected != 0)


def _write_n5(path: Path, x: np.ndarray, block: tuple[int, int, int]) -> None:
    # the N5 spec: x-first attributes, big-endian blocks with a mode/ndim/dims header, gzip
    path.mkdir()
    (path / "attributes.json").write_text(json.dumps({"dimensions": list(x.shape[::-1]), "blockSize": list(block[::-1]),
                                                      "dataType": x.dtype.name, "compression": {"type": "gzip"}}))
    for idx in np.ndindex(*[-(-s // b) for s, b in zip(x.shape, block)]):
        part = x[tuple(slice(i * b, (i + 1) * b) for i, b in zip(idx, block))]
        dims = b"".join(int(d).to_bytes(4, "big") for d in part.shape[::-1])
        head = (0).to_bytes(2, "big") + (3).to_bytes(2, "big") + dims
        f = path.joinpath(*map(str, idx[::-1]))
        f.parent.mkdir(parents=True, exist_ok=True)
        comp = zlib.compressobj(wbits=31)
        f.write_bytes(head + comp.compress(part.astype(x.dtype.newbyteorder(">")).tobytes()) + comp.flush())


def test_ingest_formats(tmp_path: Path) -> None:
    import tifffile
    import zarr

    rng = np.random.default_rng(0)
    x = rng.integers(0, 60000, size=(9, 21, 17)).astype(np.uint16)
    (tmp_path / "tifs").mkdir()
    for z in range(9):
        tifffile.imwrite(tmp_path / "tifs" / f"plane_{z}.tif", x[z])
    tifffile.imwrite(tmp_path / "multi.tif", x)
    z2 = zarr.open_array(tmp_path / "v2.zarr", mode="w", shape=x.shape, chunks=(4, 5, 6), dtype=x.dtype, zarr_format=2)
    z2[...] = x
    z3 = zarr.open_array(tmp_path / "v3.zarr", mode="w", shape=x.shape, chunks=(4, 5, 6), dtype=x.dtype)
    z3[...] = x
    _write_n5(tmp_path / "data.n5", x, (4, 8, 5))
    np.save(tmp_path / "x.npy", x)
    import h5py

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("raw/volume", data=x, chunks=(3, 7, 5))
    sources = [x, tmp_path / "tifs", str(tmp_path / "tifs" / "*.tif"), tmp_path / "multi.tif", tmp_path / "v2.zarr",
               tmp_path / "v3.zarr", tmp_path / "data.n5", tmp_path / "x.npy", tmp_path / "x.h5"]
    for i, src in enumerate(sources):
        ds = ingest(src, tmp_path / f"out{i}.zarr", chunks=(4, 8, 8), progress=False, slab_bytes=1000)
        assert np.array_equal(ds["0"][...], x), f"source {src}"
    ds = ingest(x, tmp_path / "sharded.zarr", chunks=(2, 4, 4), shards=(4, 8, 8), progress=False)
    assert ds["0"].shards == (4, 8, 8) and np.array_equal(ds["0"][...], x)
    with pytest.raises(ValueError, match="cannot tell"):
        ingest(tmp_path / "nothing.xyz", tmp_path / "bad.zarr", progress=False)


def test_volume_schema_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="integer dtype"):
        create_volume(tmp_path / "a.zarr", (4, 4, 4), np.float32, labels=True)
    with pytest.raises(SchemaError, match="3-D"):
        create_volume(tmp_path / "b.zarr", (4, 4), np.uint8)
    ds = create_volume(tmp_path / "c.zarr", (4, 4, 4), np.uint8)
    ome = dict(ds.group.attrs["ome"])
    ome["multiscales"] = [{**ome["multiscales"][0], "datasets": [{"path": "0"}, {"path": "1"}]}]
    ds.group.attrs["ome"] = ome
    with pytest.raises(SchemaError, match="'1'"):
        open_volume(tmp_path / "c.zarr")
