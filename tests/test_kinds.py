"""Every dataset kind opens in plain ``xarray.open_zarr`` with named dimensions; secrets never show."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from neurochunk.stores import KINDS, Dataset, SchemaError

OME = {"version": "0.5", "multiscales": [{
    "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [10.0, 10.0, 10.0]}]}],
}]}

MINIMAL = {
    "neuron_state": ({}, {}, [("v", (10,), "f4", ("neuron",))]),
    "connectivity": ({"n_pre": 4, "n_post": 4}, {}, [("indices", (6,), "u4", ("synapse",)),
                                                     ("weights", (6,), "f4", ("synapse",)),
                                                     ("indptr", (5,), "u8", ("pre",))]),
    "spikes": ({"dt": 0.1}, {}, [("t", (5,), "f4", ("spike",)), ("neuron", (5,), "u4", ("spike",))]),
    "memory_bank": ({"partitions": 2}, {}, [("id", (8,), "u8", ("memory",)), ("strength", (8,), "f4", ("memory",))]),
    "volume": ({}, {"ome": OME}, [("0", (4, 5, 6), "u1", ("z", "y", "x"))]),
    "activations": ({}, {}, [("hidden", (6, 3), "f4", ("sample", "unit"))]),
}


def test_every_kind_has_a_minimal_example() -> None:
    assert set(MINIMAL) >= {"neuron_state", "connectivity", "spikes", "memory_bank", "volume", "activations"}
    assert set(MINIMAL) <= set(KINDS)


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_kind_opens_in_plain_xarray(tmp_path, kind: str) -> None:
    attrs, root_attrs, arrays = MINIMAL[kind]
    ds = Dataset.create(tmp_path / "d.zarr", kind, attrs=attrs, root_attrs=root_attrs)
    for name, shape, dtype, dims in arrays:
        ds.create_array(name, shape, dtype, chunks=shape, dims=dims)[...] = np.ones(shape, dtype)
    assert Dataset.open(tmp_path / "d.zarr", kind=kind).kind == kind
    xds = xr.open_zarr(tmp_path / "d.zarr", zarr_format=3, consolidated=False)
    for name, shape, _, dims in arrays:
        assert xds[name].dims == dims and xds[name].shape == shape


def test_volume_without_ome_is_rejected(tmp_path) -> None:
    ds = Dataset.create(tmp_path / "v.zarr", "volume")
    ds.create_array("0", (2, 2, 2), "u1", chunks=(2, 2, 2), dims=("z", "y", "x"))
    with pytest.raises(SchemaError, match="OME-Zarr"):
        Dataset.open(tmp_path / "v.zarr")


def test_volume_listing_a_missing_level_names_it(tmp_path) -> None:
    ome = {**OME, "multiscales": [{**OME["multiscales"][0], "datasets": OME["multiscales"][0]["datasets"]
                                   + [{"path": "1", "coordinateTransformations": []}]}]}
    ds = Dataset.create(tmp_path / "v.zarr", "volume", root_attrs={"ome": ome})
    ds.create_array("0", (2, 2, 2), "u1", chunks=(2, 2, 2), dims=("z", "y", "x"))
    with pytest.raises(SchemaError, match=r"array '1' .* listed in OME-Zarr multiscales but does not exist"):
        Dataset.open(tmp_path / "v.zarr")


def test_not_a_neurochunk_dataset(tmp_path) -> None:
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    with pytest.raises(SchemaError, match="not a neurochunk dataset"):
        Dataset.open(tmp_path / "plain.zarr")


def test_unknown_url_scheme_is_named() -> None:
    with pytest.raises(ValueError, match="unsupported URL scheme 'gs'"):
        Dataset.open("gs://bucket/x")


def test_s3_secrets_never_shown(s3_bucket: str, s3_options, capsys) -> None:
    from neurochunk.workflows.info import format_info

    ds = Dataset.create(f"s3://{s3_bucket}/d.zarr", "neuron_state", s3=s3_options)
    ds.create_array("v", (4,), "f4", chunks=(2,), dims=("neuron",))[:] = 1
    again = Dataset.open(f"s3://{s3_bucket}/d.zarr", s3=s3_options)
    shown = " ".join([repr(s3_options), str(s3_options.public()), repr(again), repr(again.store),
                      format_info(again.info()), str(again.info())])
    assert s3_options.secret not in shown and s3_options.key not in shown
    assert "credentials set" in format_info(again.info())


def test_s3_credentials_from_aws_environment(s3_bucket: str, s3_endpoint: str, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    ds = Dataset.create(f"s3://{s3_bucket}/env.zarr", "neuron_state")
    ds.create_array("v", (3,), "i4", chunks=(3,), dims=("neuron",))[:] = [1, 2, 3]
    np.testing.assert_array_equal(Dataset.open(f"s3://{s3_bucket}/env.zarr")["v"][:], [1, 2, 3])
