"""HPC clusters through dask-jobqueue (imported only when a config asks for one)."""

from __future__ import annotations

from typing import Any

from .config import ClusterConfig, JobqueueConfig

__all__ = ["job_script", "jobqueue_cluster"]

_CLASSES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}


def _make(jq: JobqueueConfig, cfg: ClusterConfig, security: Any = None) -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ImportError("a jobqueue cluster needs dask-jobqueue: pip install 'neurochunk[hpc]'") from exc
    cls = getattr(dask_jobqueue, _CLASSES[jq.kind])
    kwargs: dict[str, Any] = dict(
        cores=jq.cores, processes=jq.processes, memory=jq.memory, walltime=jq.walltime,
        job_extra_directives=list(jq.job_extra_directives), job_script_prologue=list(jq.job_script_prologue),
        scheduler_options={"dashboard_address": cfg.dashboard_address,
                           **({"interface": jq.interface} if jq.interface else {"host": "127.0.0.1"})},
    )
    for name in ("queue", "account", "interface", "local_directory", "log_directory", "python"):
        value = getattr(jq, name)
        if value is not None:
            kwargs[name] = value
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = "tls://"
        if jq.log_directory is not None:
            # a temporary certificate reaches the jobs as files (mode 0600) in a directory they share
            kwargs["shared_temp_directory"] = jq.log_directory
    return cls(**kwargs)


def jobqueue_cluster(cfg: ClusterConfig, security: Any = None) -> Any:
    """Start a dask-jobqueue cluster that scales adaptively between min and max jobs."""
    assert cfg.jobqueue is not None
    cluster = _make(cfg.jobqueue, cfg, security)
    jq = cfg.jobqueue
    cluster.adapt(minimum_jobs=jq.min_jobs, maximum_jobs=jq.max_jobs)
    return cluster


def job_script(cfg: ClusterConfig) -> str:
    """The batch script dask-jobqueue would submit for ``cfg``."""
    if cfg.jobqueue is None:
        raise ValueError("the config has no cluster.jobqueue section")
    cluster = _make(cfg.jobqueue, cfg)
    try:
        return str(cluster.job_script())
    finally:
        cluster.close()
