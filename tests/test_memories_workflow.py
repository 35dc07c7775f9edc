"""The ``memories`` workflow end to end: config, run, resume, the strength-histogram plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from neurochunk.pipeline.memorybank import MemoryBank
from neurochunk.workflows.cli import main
from neurochunk.workflows.config import ConfigError
from neurochunk.workflows.run import prepare, run_config


def _config(tmp_path: Path, **params) -> Path:
    cfg = {"workflow": "memories", "progress": False, "store": {"url": str(tmp_path / "bank.zarr"), "overwrite": True},
           "params": {"n_memories": 20_000, "partitions": 4, "ingest_batch": 6_000, "iterations": 12,
                      "commit_every": 5, "k": 10, "payload_dim": 4,
                      "replica_url": str(tmp_path / "replica.zarr"), **params}}
    path = tmp_path / "memories.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_memories_run_and_plot(tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        summary = run_config(_config(tmp_path), client=client)
    assert summary["memories"] == 20_000 and summary["iteration"] == 12
    assert summary["commits"] == ["v2-iter5", "v3-iter10", "v4-iter12"]
    assert 0 < summary["final_mean_strength"] < 0.5 * 0.98**12 + 0.05
    assert summary["graph_tasks_per_commit"] < 10 * 4
    replica = MemoryBank.open(str(tmp_path / "replica.zarr"))
    assert replica.commit_name == "v4-iter12" and replica.n_memories == 20_000
    np.testing.assert_array_equal(replica.read_all()["strength"],
                                  MemoryBank.open(str(tmp_path / "bank.zarr")).read_all()["strength"])
    assert main(["plot", str(tmp_path / "bank.zarr"), "--out", str(tmp_path / "plots")]) == 0
    png = tmp_path / "plots" / "strength_hist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memories_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="params.decay_rate"):
        prepare(_config(tmp_path, decay_rate="fast"))
    with pytest.raises(ConfigError, match="params.colour"):
        prepare(_config(tmp_path, colour=1))


def test_memories_scaled_run_stays_near_exact_run(tmp_path):
    (tmp_path / "exact").mkdir()
    (tmp_path / "scaled").mkdir()
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        exact = run_config(_config(tmp_path / "exact", replica_url=None, payload_dim=0), client=client)
        scaled = run_config(_config(tmp_path / "scaled", replica_url=None, payload_dim=0, scaled=True),
                            client=client)
    assert scaled["iteration"] == exact["iteration"] == 12 and scaled["commits"] == exact["commits"]
    a = MemoryBank.open(str(tmp_path / "exact" / "bank.zarr")).read_all()
    b = MemoryBank.open(str(tmp_path / "scaled" / "bank.zarr")).read_all()
    np.testing.assert_array_equal(a["count"], b["count"])
    ulps = np.abs(a["strength"].view(np.int32) - b["strength"].view(np.int32))
    assert 0 < ulps.max() <= 12  # a different rounding of the same decays, at most one ulp per iteration
