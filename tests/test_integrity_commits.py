"""Checksums name corrupted chunks; commits survive a writer killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from neurochunk.stores import ChunkCorruptionError, Dataset


def _flip_byte(path: Path, offset: int = 20) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("codec", ["lossless", "raw", "bitround:8"])
def test_flipped_byte_names_array_and_chunk(tmp_path: Path, codec: str) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    values = np.random.default_rng(0).random(300).astype("f4")
    ds.create_array("v", (300,), "f4", chunks=(100,), dims=("neuron",), codec=codec)[:] = values
    _flip_byte(tmp_path / "d.zarr" / "v" / "c" / "1")
    again = Dataset.open(tmp_path / "d.zarr")
    np.testing.assert_allclose(again["v"][:100], values[:100], rtol=1e-2)  # other chunks still read
    with pytest.raises(ChunkCorruptionError, match=r"corrupted chunk 'v/c/1' of array 'v'") as err:
        again["v"][:]
    assert str(tmp_path) in str(err.value)


def test_corruption_is_named_through_xarray_and_dask(tmp_path: Path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    ds.create_array("g", (40, 3), "f8", chunks=(10, 3), dims=("neuron", "synapse_type"))[:] = 1.0
    _flip_byte(tmp_path / "d.zarr" / "g" / "c" / "2" / "0", offset=8)
    xds = Dataset.open(tmp_path / "d.zarr").to_xarray()
    with pytest.raises(ChunkCorruptionError, match=r"'g/c/2/0'"):
        xds["g"].sum().compute(scheduler="threads")


_WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from neurochunk.stores import Dataset
    ds = Dataset.create(sys.argv[1], "neuron_state")
    with ds.commits.begin("good", {"step": 100}) as c:
        c.write("v", np.full(1000, 7.0, "f4"), dims=("neuron",), chunks=(100,))
    pending = ds.commits.begin("doomed", {"step": 200})
    arr = pending.create_array("v", (100000,), "f4", chunks=(100,), dims=("neuron",))
    for i in range(1000):
        arr[i * 100:(i + 1) * 100] = np.float32(i)
        if i == 5:
            open(sys.argv[2], "w").write("midway")
        time.sleep(0.01)
    pending.finish()
""")


def test_sigkill_mid_commit_leaves_previous_commit(tmp_path: Path) -> None:
    url, flag = tmp_path / "ck.zarr", tmp_path / "midway"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(url), str(flag)])
    try:
        deadline = time.time() + 60
        while not flag.exists():
            assert proc.poll() is None, "writer exited early"
            assert time.time() < deadline, "writer never reached the middle of its commit"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    ds = Dataset.open(url, mode="r+")
    latest = ds.commits.latest()
    assert latest.name == "good" and latest.meta == {"step": 100}
    np.testing.assert_array_equal(ds.commits.open()["v"][:], 7.0)
    assert ds.commits.gc() == ["commits/00000002"]
    with ds.commits.begin("after") as c:
        c.write("v", np.zeros(4, "f4"), dims=("neuron",))
    assert [c.name for c in ds.commits.list()] == ["good", "after"]


def test_truncated_marker_is_ignored(tmp_path: Path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    with ds.commits.begin("one") as c:
        c.write("v", np.ones(3, "f4"), dims=("neuron",))
    with ds.commits.begin("two") as c:
        c.write("v", np.ones(3, "f4") * 2, dims=("neuron",))
    marker = tmp_path / "d.zarr" / "_commits" / "00000002.json"
    marker.write_bytes(marker.read_bytes()[:-7])
    assert ds.commits.latest().name == "one"


def test_failed_commit_is_aborted(tmp_path: Path) -> None:
    ds = Dataset.create(tmp_path / "d.zarr", "neuron_state")
    with ds.commits.begin("one") as c:
        c.write("v", np.ones(3, "f4"), dims=("neuron",))
    with pytest.raises(RuntimeError, match="boom"):
        with ds.commits.begin("two") as c:
            c.write("v", np.zeros(3, "f4"), dims=("neuron",))
            raise RuntimeError("boom")
    assert [c.name for c in ds.commits.list()] == ["one"]
    assert not (tmp_path / "d.zarr" / "commits" / "00000002").exists()
