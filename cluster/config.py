"""The ``cluster:`` section of a run config: where a graph runs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["ClusterConfig", "JobqueueConfig", "TLSConfig"]

JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf")


@dataclass(frozen=True)
class JobqueueConfig:
    """An HPC batch scheduler, through dask-jobqueue."""

    kind: str = "slurm"
    queue: str | None = None
    account: str | None = None
    cores: int = 1
    processes: int = 1
    memory: str = "4GiB"
    walltime: str = "01:00:00"
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    min_jobs: int = 0
    max_jobs: int = 1
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOBQUEUE_KINDS:
            raise ValueError(f"jobqueue.kind must be one of {', '.join(JOBQUEUE_KINDS)}, not {self.kind!r}")
        if not 0 <= self.min_jobs <= self.max_jobs:
            raise ValueError(f"jobqueue needs 0 <= min_jobs <= max_jobs, got {self.min_jobs} and {self.max_jobs}")


@dataclass(frozen=True)
class TLSConfig:
    """distributed's TLS: certificate files, or ``temporary: true`` for a generated local one."""

    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None
    temporary: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """Where graphs run. Everything defaults to an embedded LocalCluster sized to this machine.

    Parameters
    ----------
    address
        Connect to an existing scheduler instead of starting one.
    gpu
        Start dask-cuda's LocalCUDACluster (one worker per GPU).
    jobqueue
        Start workers through an HPC scheduler (dask-jobqueue).
    n_workers, threads_per_worker
        LocalCluster size; ``None`` sizes it to the machine.
    memory_limit
        Per-worker memory limit (``"4GiB"``, bytes, or ``"auto"``).
    dashboard_address
        Where the dashboard listens; 127.0.0.1 unless set otherwise.
    processes
        Workers in separate processes (``True``) or threads of this one.
    timeout
        Seconds to wait for a scheduler at ``address``.
    protocol
        How started workers talk: ``"tcp"`` (the default) or, with ``gpu``, ``"ucx"`` (dask-cuda over
        distributed-ucxx: GPU arrays go between the GPUs of a host over NVLink, without host copies).
    rmm_pool_size
        With ``gpu``: each worker's RMM pool (``"2GiB"``); with ``protocol: ucx`` it defaults to ``"1GiB"``:
        the buffers a worker receives from other GPUs then come from the pool instead of
        ``cudaMalloc``/``cudaFree`` (which waits for the whole device) on every transfer.
    device_memory_limit
        With ``gpu``: dask-cuda's device spilling threshold (``0`` turns spilling off: state advanced in place
        on the GPU, as ``backend: gpu`` simulations keep it, is then never copied to the host).
    malloc_keep_mib
        MiB of freed heap each started worker's glibc keeps for reuse (``MALLOC_TRIM_THRESHOLD_``; chunks
        under 32 MiB then come from the heap instead of fresh ``mmap`` calls). 0 keeps Dask's default
        (64 KiB), which returns every decoded chunk to the OS: page faults on every chunk of a
        partition-streaming loop (``benchmarks/results/memories.md``, round 5).
    """

    address: str | None = None
    gpu: bool = False
    jobqueue: JobqueueConfig | None = None
    n_workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | int = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    processes: bool = True
    timeout: float = 10.0
    tls: TLSConfig | None = None
    protocol: str | None = None
    rmm_pool_size: str | int | None = None
    device_memory_limit: str | int | float | None = None
    malloc_keep_mib: int = 16

    def __post_init__(self) -> None:
        if self.protocol not in (None, "tcp", "ucx"):
            raise ValueError(f"cluster.protocol must be tcp or ucx, not {self.protocol!r}")
        if self.protocol == "ucx" and not self.gpu:
            raise ValueError("cluster.protocol: ucx needs gpu: true (dask-cuda's LocalCUDACluster)")
        if self.protocol is not None and self.tls is not None:
            raise ValueError("cluster.tls sets the protocol (tls): leave cluster.protocol out")
        if not self.gpu and (self.rmm_pool_size is not None or self.device_memory_limit is not None):
            raise ValueError("cluster.rmm_pool_size and cluster.device_memory_limit need gpu: true")
        if self.malloc_keep_mib < 0:
            raise ValueError(f"cluster.malloc_keep_mib must be >= 0, not {self.malloc_keep_mib}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ClusterConfig:
        """Build from a (validated) mapping."""
        data = dict(data or {})
        if isinstance(data.get("jobqueue"), dict):
            jq = dict(data["jobqueue"])
            for k in ("job_extra_directives", "job_script_prologue"):
                if k in jq:
                    jq[k] = tuple(jq[k])
            data["jobqueue"] = JobqueueConfig(**jq)
        if isinstance(data.get("tls"), dict):
            data["tls"] = TLSConfig(**data["tls"])
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown cluster field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)
