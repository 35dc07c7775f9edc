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


_HEAP_PROBE = """
import json, os, sys
from neurochunk.cluster import connect
client = connect({"dashboard_address": "127.0.0.1:0", "n_workers": 1, "threads_per_worker": 1,
                  "malloc_keep_mib": int(sys.argv[1])}, quiet=True)
try:
    print(json.dumps(list(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())))
finally:
    client.close()
"""


@pytest.mark.parametrize(("keep", "trim"), [(16, str(16 * 2**20)), (0, "65536")])
def test_started_workers_keep_freed_heap(keep, trim) -> None:
    """Each in a fresh interpreter: distributed's in-process nannies leave the variable in ``os.environ``."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, str(keep)], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [trim]


@pytest.mark.parametrize(("cfg", "message"), [
    ({"protocol": "udp"}, "cluster.protocol must be tcp or ucx, not 'udp'"),
    ({"protocol": "ucx"}, "protocol: ucx needs gpu: true"),
    ({"malloc_keep_mib": -1}, "malloc_keep_mib must be >= 0"),
    ({"rmm_pool_size": "1GiB"}, "rmm_pool_size and cluster.device_memory_limit need gpu: true"),
])
def test_bad_protocol_and_heap_settings_are_named(cfg, message) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterConfig.from_dict(cfg)
