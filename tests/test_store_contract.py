"""One contract every store kind keeps: memory, local disk, tiered over local, S3 (moto)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from neurochunk.stores import Dataset, DatasetExistsError, SchemaError


def _make(loc: dict, kind: str = "neuron_state", **kw) -> Dataset:
    url = loc["url"]
    opts = {k: v for k, v in loc.items() if k != "url"}
    return Dataset.create(url, kind, **opts, **kw)


def _open(loc: dict, **kw) -> Dataset:
    opts = {k: v for k, v in loc.items() if k != "url"}
    return Dataset.open(loc["url"], **opts, **kw)


def test_roundtrip_values_and_metadata(dataset_location: dict) -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(-60, 5, size=1003).astype(np.float32)  # uneven last chunk
    ds = _make(dataset_location, attrs={"model": "lif"})
    ds.create_array("v", v.shape, v.dtype, chunks=(100,), dims=("neuron",))[:] = v
    again = _open(dataset_location, kind="neuron_state")
    np.testing.assert_array_equal(again["v"][:], v)
    assert again.attrs["model"] == "lif"
    assert again["v"].metadata.dimension_names == ("neuron",)
    assert again.names == ["v"]


def test_opens_in_xarray_with_named_dims(dataset_location: dict) -> None:
    ds = _make(dataset_location)
    ds.create_array("v", (50,), "f4", chunks=(10,), dims=("neuron",))[:] = np.arange(50, dtype="f4")
    xds = _open(dataset_location).to_xarray()
    assert isinstance(xds, xr.Dataset)
    assert xds["v"].dims == ("neuron",)
    assert float(xds["v"].sum()) == pytest.approx(float(np.arange(50).sum()))


def test_partial_chunk_write_keeps_neighbours(dataset_location: dict) -> None:
    ds = _make(dataset_location)
    a = ds.create_array("v", (30,), "i4", chunks=(10,), dims=("neuron",))
    a[:] = np.arange(30)
    a[5:15] = -1
    expect = np.arange(30)
    expect[5:15] = -1
    np.testing.assert_array_equal(_open(dataset_location)["v"][:], expect)


def test_create_refuses_to_overwrite(dataset_location: dict) -> None:
    _make(dataset_location).create_array("v", (4,), "f4", chunks=(2,), dims=("neuron",))
    with pytest.raises(DatasetExistsError, match="already exists"):
        _make(dataset_location)
    fresh = _make(dataset_location, overwrite=True)
    assert fresh.names == []


def test_wrong_kind_names_dataset(dataset_location: dict) -> None:
    _make(dataset_location)
    with pytest.raises(SchemaError, match="is a 'neuron_state' dataset, not 'volume'") as err:
        _open(dataset_location, kind="volume")
    assert dataset_location["url"].split("://")[-1].split("/")[0] in str(err.value)


def test_broken_schema_names_array(dataset_location: dict) -> None:
    ds = _make(dataset_location, kind="spikes", attrs={"dt": 0.1})
    ds.create_array("t", (10,), "f4", chunks=(5,), dims=("spike",))
    ds.create_array("neuron", (10,), "f4", chunks=(5,), dims=("spike",))  # ids must be integers
    with pytest.raises(SchemaError, match=r"array 'neuron' .*dtype <f4.*kind 'iu'"):
        _open(dataset_location)


def test_commit_roundtrip(dataset_location: dict) -> None:
    ds = _make(dataset_location)
    with ds.commits.begin("first", {"step": 1}) as c:
        c.write("v", np.ones(8, "f4"), dims=("neuron",), chunks=(4,))
    with ds.commits.begin("second", {"step": 2}) as c:
        c.write("v", np.full(8, 2, "f4"), dims=("neuron",), chunks=(4,))
    log = _open(dataset_location).commits
    assert [c.name for c in log.list()] == ["first", "second"]
    np.testing.assert_array_equal(log.open()["v"][:], 2)
    np.testing.assert_array_equal(log.open("first")["v"][:], 1)
    assert log.latest().meta == {"step": 2}
