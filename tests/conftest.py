"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1) and dataset URLs of every store kind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from neurochunk.stores import S3Options, TierConfig


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's ThreadedMotoServer: a real HTTP S3 endpoint for s3fs, no patching."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_options(s3_endpoint: str) -> S3Options:
    return S3Options(endpoint_url=s3_endpoint, key="testing-key-id", secret="testing-secret-value")


@pytest.fixture()
def s3_bucket(s3_options: S3Options) -> str:
    """A fresh bucket; returns its name."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options.storage_options())
    name = f"nc-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return name


STORE_KINDS = ["memory", "local", "tiered", "s3"]


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def dataset_location(store_kind: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest) -> dict:
    """``{"url": ..., **open/create kwargs}`` for one store kind."""
    if store_kind == "memory":
        return {"url": f"memory://{uuid.uuid4().hex}"}
    if store_kind == "local":
        return {"url": str(tmp_path) + "/ds.zarr"}
    if store_kind == "tiered":
        return {"url": str(tmp_path) + "/ds.zarr",
                "tiers": TierConfig(ram_bytes=1 << 20, disk_path=str(tmp_path) + "/cache", disk_bytes=1 << 22)}
    bucket = request.getfixturevalue("s3_bucket")
    return {"url": f"s3://{bucket}/ds.zarr", "s3": request.getfixturevalue("s3_options")}
