"""TLS for the scheduler, workers and clients (distributed's ``Security``)."""

from __future__ import annotations

from typing import Any

from .config import TLSConfig

__all__ = ["make_security"]


def make_security(tls: TLSConfig) -> Any:
    """A ``distributed.security.Security`` from certificate files, or a temporary one."""
    from distributed.security import Security

    if tls.temporary:
        return Security.temporary()
    missing = [n for n in ("ca_file", "cert", "key") if getattr(tls, n) is None]
    if missing:
        raise ValueError(f"cluster.tls needs {', '.join(missing)} (or temporary: true)")
    return Security(
        tls_ca_file=tls.ca_file, tls_client_cert=tls.cert, tls_client_key=tls.key,
        tls_scheduler_cert=tls.cert, tls_scheduler_key=tls.key,
        tls_worker_cert=tls.cert, tls_worker_key=tls.key, require_encryption=True,
    )
