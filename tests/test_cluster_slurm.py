"""HPC through dask-jobqueue against a real Slurm (``../shared/hpc/start-local-slurm.sh``; CI runs it).

Workers are submitted with ``sbatch`` by dask-jobqueue's SLURMCluster on the
loopback interface; the tests run real workflow graphs on them, watch the
adaptive cluster grow and shrink, and check that no job is left in ``squeue``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from neurochunk.cluster import connect
from neurochunk.workflows import run_config
from neurochunk.workflows.cli import main


def _slurm_up() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "no Slurm on this machine (bash .ci/setup-slurm.sh starts a local one as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0 or not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"Slurm is installed but no node is up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


needs_slurm = pytest.mark.skipif(_slurm_up() is not None, reason=str(_slurm_up()))


JOB_NAME = f"nc-test-{uuid.uuid4().hex[:8]}"  # this session's jobs only, even with other runs beside it


def _jobs(name: str = JOB_NAME, states: str | None = None) -> list[str]:
    """This test's jobs in squeue (by default every job not finished: pending, running, completing)."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T", *(["-t", states] if states else [])],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[::2]


def _jobqueue(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "slurm", "cores": 1, "processes": 1, "memory": "2GiB", "walltime": "00:10:00",
            "interface": "lo", "log_directory": str(tmp_path / "slurm-logs"),
            "job_extra_directives": [f"--job-name={JOB_NAME}"], **extra}


@pytest.mark.slurm
@needs_slurm
def test_demo_workflow_runs_on_slurm_workers(tmp_path: Path) -> None:
    assert _jobs() == []
    cfg = {"workflow": "demo",
           "store": {"url": str(tmp_path / "state.zarr"), "overwrite": True,
                     "tiers": {"ram_bytes": 64 * 2**20, "disk_path": str(tmp_path / "cache")}},
           "cluster": {"dashboard_address": "127.0.0.1:0",
                       "jobqueue": _jobqueue(tmp_path, min_jobs=1, max_jobs=1)},
           "params": {"n_neurons": 200_000, "chunk": 25_000, "seed": 3}}
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = run_config(path)
    # the values were computed on the Slurm worker: the same graph in-process gives the same mean
    import dask
    import dask.array as da
    import numpy as np

    rng = da.random.default_rng(3)
    v = (-60.0 + 10.0 * rng.random(200_000, chunks=25_000, dtype=np.float32)).astype(np.float32)
    with dask.config.set(scheduler="sync"):
        expected = float(v.mean())
    assert summary["mean_v_mV"] == pytest.approx(expected, abs=1e-3)
    assert summary["reread_equal"] is True and summary["origin_reads"]["second"] == 0
    logs = list((tmp_path / "slurm-logs").glob("*.err"))
    assert logs and any("Registered to" in p.read_text() for p in logs), "no worker log from a Slurm job"
    deadline = time.monotonic() + 15
    while _jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _jobs() == [], "Slurm jobs left behind"


@pytest.mark.slurm
@needs_slurm
def test_adaptive_scales_between_min_and_max_jobs(tmp_path: Path) -> None:
    client = connect({"dashboard_address": "127.0.0.1:0",
                      "jobqueue": _jobqueue(tmp_path, min_jobs=0, max_jobs=2)}, quiet=True)
    try:
        assert len(client.scheduler_info()["workers"]) == 0 and _jobs() == []
        peak = {"workers": 0, "jobs": 0}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak["workers"] = max(peak["workers"], len(client.scheduler_info()["workers"]))
                peak["jobs"] = max(peak["jobs"], len(_jobs(states="PD,CF,R")))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            futures = client.map(lambda i: (time.sleep(0.4), i * i)[1], range(24))
            results = client.gather(futures)
        finally:
            stop.set()
            watcher.join()
        assert results == [i * i for i in range(24)]
        assert peak["workers"] == 2 and peak["jobs"] == 2, peak  # grew to max_jobs, never beyond
        del futures
        deadline = time.monotonic() + 40
        while (client.scheduler_info()["workers"] or _jobs()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not client.scheduler_info()["workers"], "adaptive did not shrink back to min_jobs=0"
        assert _jobs() == []
    finally:
        client.close()
    assert _jobs() == []


def test_print_job_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("dask_jobqueue")
    cfg = {"workflow": "demo", "cluster": {"dashboard_address": "127.0.0.1:0", "jobqueue": {
        "kind": "slurm", "queue": "gpu-long", "account": "neuro42", "cores": 8, "memory": "32GiB",
        "walltime": "02:30:00", "job_extra_directives": ["--gres=gpu:1"], "interface": "lo",
        "min_jobs": 0, "max_jobs": 4}}}
    path = tmp_path / "hpc.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["cluster", "--print-job-script", str(path)]) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH -p gpu-long", "#SBATCH -A neuro42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=",
                 "#SBATCH -t 02:30:00", "#SBATCH --gres=gpu:1"):
        assert line in script, (line, script)
    assert "distributed.cli.dask_worker" in script and "--nthreads 8" in script and "--interface lo" in script


@pytest.mark.slurm
@needs_slurm
def test_slurm_workers_over_tls(tmp_path: Path) -> None:
    (tmp_path / "slurm-logs").mkdir()
    client = connect({"dashboard_address": "127.0.0.1:0", "tls": {"temporary": True},
                      "jobqueue": _jobqueue(tmp_path, min_jobs=1, max_jobs=1)}, quiet=True)
    try:
        script = client._owned_cluster.job_script()
        assert "--protocol tls://" in script and "--tls-key " in script
        assert "PRIVATE KEY" not in script  # the key travels as a file, never inside the script
        key_files = list((tmp_path / "slurm-logs").glob(".dask-jobqueue.worker.key.*"))
        assert key_files and all(p.stat().st_mode & 0o077 == 0 for p in key_files)
        client.wait_for_workers(1, timeout=60)
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
        assert client.submit(sum, range(10)).result() == 45
        with pytest.raises(ConnectionError, match="cluster.tls"):
            connect({"address": client.scheduler.address, "timeout": 2}, quiet=True)
    finally:
        client.close()
    deadline = time.monotonic() + 15
    while _jobs() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _jobs() == []
