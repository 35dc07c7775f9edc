"""The default ``connect()``: a LocalCluster sized to the machine that computes and leaves nothing behind."""

from __future__ import annotations

import multiprocessing

import dask.array as da
import numpy as np
import psutil
import pytest
from neurochunk.cluster import ClusterConfig, ClusterUnreachableError, connect
from neurochunk.cluster.local import machine_size


def test_default_connect_computes_and_shuts_down(capsys: pytest.CaptureFixture[str]) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    client = connect({"dashboard_address": "127.0.0.1:0"})
    try:
        info = client.scheduler_info()
        workers = list(info["workers"].values())
        n, threads, memory = machine_size(ClusterConfig())
        assert len(workers) == n and all(w["nthreads"] == threads for w in workers)
        assert all(0 < w["memory_limit"] <= psutil.virtual_memory().total for w in workers)
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        x = da.arange(100_000, chunks=10_000)
        assert int((x * 2).sum().compute()) == int((np.arange(100_000) * 2).sum())
    finally:
        client.close()
    assert "dashboard at http://127.0.0.1:" in capsys.readouterr().err
    # multiprocessing's resource tracker is one shared helper per interpreter, not a worker
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline())} - before
    names = [" ".join(psutil.Process(p).cmdline())[:120] for p in left]
    assert not left, f"processes left behind: {names}"
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_unreachable_scheduler_names_address() -> None:
    with pytest.raises(ClusterUnreachableError, match=r"tcp://127\.0\.0\.1:9 within 1 s"):
        connect({"address": "tcp://127.0.0.1:9", "timeout": 1.0}, quiet=True)


def test_unknown_cluster_field_is_named() -> None:
    with pytest.raises(ValueError, match="n_wrokers"):
        ClusterConfig.from_dict({"n_wrokers": 2})
