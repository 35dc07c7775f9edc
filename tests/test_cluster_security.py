"""TLS, secrets kept out of every output, and resilience of the cluster layer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from distributed import Client
from distributed.security import Security
from neurochunk.cluster import ClusterUnreachableError, TLSConfig, connect
from neurochunk.cluster.security import make_security
from neurochunk.stores import S3Options

KEY_ID = "AKIANEUROCHUNKKEYID7"
SECRET = "nc-secret-4f9d2b7e0a1c8e35d6b2"


def _tls_files(tmp_path: Path) -> dict[str, str]:
    """A self-signed CA/cert/key written to files (distributed's temporary certificate, as PEM)."""
    sec = Security.temporary()
    paths = {}
    for name, pem in (("ca_file", sec.tls_ca_file), ("cert", sec.tls_scheduler_cert),
                      ("key", sec.tls_scheduler_key)):
        path = tmp_path / f"{name}.pem"
        path.write_text(pem)
        paths[name] = str(path)
    return paths


def test_tls_from_files_admits_only_clients_with_the_certificate(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    client = connect({"n_workers": 1, "threads_per_worker": 1, "processes": False,
                      "dashboard_address": "127.0.0.1:0", "tls": files}, quiet=True)
    try:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result() == 6
        # with the certificate files: connects and computes
        with Client(address, security=make_security(TLSConfig(**files)), timeout=5) as other:
            assert other.submit(pow, 2, 10).result() == 1024
        # without any certificate: a clear error naming the address, at once
        with pytest.raises(ClusterUnreachableError, match=re.escape(address) + ".*cluster.tls"):
            connect({"address": address, "timeout": 3}, quiet=True)
        # with a certificate of another authority: the handshake is refused
        t0 = time.monotonic()
        with pytest.raises(ClusterUnreachableError, match=re.escape(address)):
            connect({"address": address, "timeout": 3, "tls": {"temporary": True}}, quiet=True)
        assert time.monotonic() - t0 < 10
        # plain TCP to the TLS port gets no Dask answer: the stated timeout, then an error naming it
        plain = address.replace("tls://", "tcp://")
        t0 = time.monotonic()
        with pytest.raises(ClusterUnreachableError, match=re.escape(plain) + " within 2 s"):
            connect({"address": plain, "timeout": 2}, quiet=True)
        assert time.monotonic() - t0 < 2 + 5
    finally:
        client.close()


def test_tls_temporary_for_a_local_run() -> None:
    client = connect({"n_workers": 1, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0",
                      "tls": {"temporary": True}}, quiet=True)
    try:
        info = client.scheduler_info()
        assert client.scheduler.address.startswith("tls://")
        assert all(addr.startswith("tls://") for addr in info["workers"])  # worker processes too
        assert client.submit(lambda x: x * 3, 7).result() == 21
    finally:
        client.close()


def test_tls_config_errors_name_missing_fields() -> None:
    with pytest.raises(ValueError, match="cluster.tls needs key"):
        make_security(TLSConfig(ca_file="ca.pem", cert="cert.pem"))


@pytest.mark.slow
def test_credentials_never_printed_logged_reported_or_in_job_script(tmp_path: Path, s3_endpoint: str) -> None:
    import s3fs

    bucket = "nc-secret-test"
    s3fs.S3FileSystem(key=KEY_ID, secret=SECRET, client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    cfg = {"workflow": "demo",
           "store": {"url": f"s3://{bucket}/state.zarr", "overwrite": True, "s3": {"endpoint_url": s3_endpoint},
                     "tiers": {"ram_bytes": 32 * 2**20, "disk_path": str(tmp_path / "cache")}},
           "cluster": {"n_workers": 1, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0",
                       "jobqueue": None},
           "params": {"n_neurons": 400_000, "chunk": 50_000}}
    path = tmp_path / "s3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "DASK_LOGGING__DISTRIBUTED": "debug", "PYTHONUNBUFFERED": "1"}
    report = tmp_path / "report.html"
    run = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "run", str(path), "--report", str(report)],
                         capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout + run.stderr
    assert '"reread_equal": true' in run.stdout and f"s3://{bucket}/state.zarr" in run.stdout  # it really ran on S3
    assert "dashboard at http://127.0.0.1:" in run.stderr
    assert re.search(r"write: +\d+%\|.*\d/8 ", run.stderr), "no progress bar on stderr"
    html = report.read_text()
    assert "Dask Performance Report" in html and len(html) > 50_000
    hpc = dict(cfg, cluster={"jobqueue": {"kind": "slurm", "cores": 2, "memory": "4GiB",
                                          "job_script_prologue": ["module load python"]}})
    path.write_text(yaml.safe_dump(hpc))
    script = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "cluster", "--print-job-script",
                             str(path)], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
                            check=False)
    assert script.returncode == 0 and "#SBATCH" in script.stdout, script.stderr[-2000:]
    opts = S3Options.from_env(endpoint_url=s3_endpoint)
    assert opts.secret is None or opts.secret != SECRET  # this process has no credentials in its env
    shown = repr(S3Options(endpoint_url=s3_endpoint, key=KEY_ID, secret=SECRET))
    for text, where in ((out, "run output and logs"), (html, "performance report"),
                        (script.stdout + script.stderr, "job script"), (shown, "S3Options repr")):
        assert SECRET not in text and KEY_ID not in text, f"a credential leaked into the {where}"


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_graph_completes() -> None:
    client = connect({"n_workers": 1, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"}, quiet=True)
    try:
        (first, pid), = client.run(os.getpid).items()

        def slow_square(i: int) -> int:
            time.sleep(0.1)
            return i * i

        futures = client.map(slow_square, range(40))
        while sum(f.status == "finished" for f in futures) < 4:
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)  # the worker dies mid-graph; its nanny starts a new one
        assert client.gather(futures) == [i * i for i in range(40)]
        (second, new_pid), = client.run(os.getpid).items()
        assert new_pid != pid and second != first
    finally:
        client.close()
