"""Where graphs run: the embedded LocalCluster (default), dask-cuda, dask-jobqueue or an address."""

from .config import ClusterConfig, JobqueueConfig, TLSConfig
from .connect import ClusterUnreachableError, OwnedClient, connect

__all__ = ["ClusterConfig", "ClusterUnreachableError", "JobqueueConfig", "OwnedClient", "TLSConfig", "connect"]
