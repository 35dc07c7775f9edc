"""``connect``: a ``distributed.Client`` for a cluster config."""

from __future__ import annotations

import sys
from typing import Any

from distributed import Client

from .config import ClusterConfig

__all__ = ["ClusterUnreachableError", "OwnedClient", "connect"]


class ClusterUnreachableError(ConnectionError):
    """No scheduler answered at the configured address in time."""


class OwnedClient(Client):
    """A client that also closes the cluster it started."""

    _owned_cluster: Any = None

    def close(self, timeout: Any = None) -> Any:  # type: ignore[override]
        result = super().close(timeout=timeout) if timeout is not None else super().close()
        cluster, self._owned_cluster = self._owned_cluster, None
        if cluster is not None:
            cluster.close()
        return result


def connect(config: ClusterConfig | dict[str, Any] | None = None, *, quiet: bool = False) -> Client:
    """Connect to (or start) the cluster ``config`` describes.

    With no config: a LocalCluster sized to the machine, memory-limited, its
    dashboard on 127.0.0.1. ``address`` connects to a running scheduler,
    ``gpu: true`` starts dask-cuda's LocalCUDACluster and a ``jobqueue``
    section starts dask-jobqueue workers; dask-cuda and dask-jobqueue are
    imported only when asked for. The dashboard link is printed to stderr.
    Closing the returned client also closes any cluster it started.
    """
    cfg = config if isinstance(config, ClusterConfig) else ClusterConfig.from_dict(config)
    security = None
    if cfg.tls is not None:
        from .security import make_security

        security = make_security(cfg.tls)
    if cfg.address:
        client = _connect_address(cfg, security)
    else:
        if cfg.gpu:
            cluster = _cuda_cluster(cfg, security)
        elif cfg.jobqueue is not None:
            from .jobqueue import jobqueue_cluster

            cluster = jobqueue_cluster(cfg, security)
        else:
            from .local import local_cluster

            cluster = local_cluster(cfg, security)
        try:
            client = OwnedClient(cluster, security=security) if security is not None else OwnedClient(cluster)
        except BaseException:
            cluster.close()
            raise
        client._owned_cluster = cluster
    from .dashboard import install, page_url

    has_page = install(client)
    if not quiet:
        print(f"neurochunk: Dask dashboard at {client.dashboard_link}", file=sys.stderr, flush=True)
        if has_page:
            print(f"neurochunk: run page at {page_url(client)}", file=sys.stderr, flush=True)
    return client


def _connect_address(cfg: ClusterConfig, security: Any) -> Client:
    if cfg.address.startswith("tls://") and security is None:
        raise ClusterUnreachableError(
            f"the scheduler at {cfg.address} speaks TLS: give cluster.tls (ca_file, cert, key) to connect")
    try:
        return Client(cfg.address, timeout=cfg.timeout, security=security)
    except (OSError, TimeoutError) as exc:
        raise ClusterUnreachableError(
            f"no Dask scheduler answered at {cfg.address} within {cfg.timeout:g} s ({exc})"
        ) from exc


def _cuda_cluster(cfg: ClusterConfig, security: Any) -> Any:
    import dask

    from .local import malloc_environ

    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ImportError("cluster.gpu needs dask-cuda: pip install 'neurochunk[gpu]'") from exc
    if cfg.protocol == "ucx":
        try:
            import distributed_ucxx  # noqa: F401
        except ImportError as exc:
            raise ImportError("cluster.protocol: ucx needs distributed-ucxx (pip install distributed-ucxx-cu13, "
                              "or -cu12 for CUDA 12)") from exc
    kwargs: dict[str, Any] = {"dashboard_address": cfg.dashboard_address, "host": "127.0.0.1"}
    if cfg.n_workers:
        kwargs["n_workers"] = cfg.n_workers
    if cfg.memory_limit != "auto":
        kwargs["memory_limit"] = cfg.memory_limit
    if security is not None:
        kwargs["security"] = security
        kwargs["protocol"] = "tls"
    elif cfg.protocol is not None:
        kwargs["protocol"] = cfg.protocol
    pool = cfg.rmm_pool_size if cfg.rmm_pool_size is not None else ("1GiB" if cfg.protocol == "ucx" else None)
    if pool is not None:
        kwargs["rmm_pool_size"] = pool
    if cfg.device_memory_limit is not None:
        kwargs["device_memory_limit"] = cfg.device_memory_limit
    with dask.config.set({"distributed.nanny.pre-spawn-environ": malloc_environ(cfg.malloc_keep_mib)}):
        return LocalCUDACluster(**kwargs)
