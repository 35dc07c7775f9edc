"""Turn dataset URLs into Zarr v3 stores.

Supported URLs are a local path, ``file://path``, ``memory://name`` and
``s3://bucket/prefix``. S3 endpoints and credentials come from explicit
options or the usual ``AWS_*`` environment variables; they are held in a
:class:`S3Options` whose repr never shows a secret.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore, MemoryStore

__all__ = ["S3Options", "StoreURL", "parse_url", "open_store", "redact"]

_MEMORY_STORES: dict[str, dict[str, Any]] = {}
_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class S3Options:
    """Connection options for an S3-compatible object store.

    Secrets are excluded from ``repr`` and from :meth:`public`, so printing or
    logging the options never leaks them.
    """

    endpoint_url: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    region: str | None = None
    anon: bool = False

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Options:
        """Fill unset fields from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ..."""
        env = {
            "endpoint_url": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            "key": os.environ.get("AWS_ACCESS_KEY_ID"),
            "secret": os.environ.get("AWS_SECRET_ACCESS_KEY"),
            "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        }
        env.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**env)

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem``."""
        opts: dict[str, Any] = {"skip_instance_cache": True, "anon": self.anon}
        if self.key is not None:
            opts["key"] = self.key
        if self.secret is not None:
            opts["secret"] = self.secret
        client: dict[str, Any] = {}
        if self.endpoint_url:
            client["endpoint_url"] = self.endpoint_url
        if self.region:
            client["region_name"] = self.region
        if client:
            opts["client_kwargs"] = client
        return opts

    def public(self) -> dict[str, Any]:
        """What may be shown to a person: no key, no secret."""
        return {"endpoint_url": self.endpoint_url, "region": self.region,
                "credentials": "set" if self.secret else "unset"}


@dataclass(frozen=True)
class StoreURL:
    """A parsed dataset URL."""

    scheme: str  # "file", "memory" or "s3"
    path: str

    def __str__(self) -> str:
        return self.path if self.scheme == "file" else f"{self.scheme}://{self.path}"

    def join(self, *parts: str) -> StoreURL:
        """The URL of a child location."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return StoreURL(self.scheme, f"{self.path.rstrip('/')}/{tail}" if tail else self.path)


def parse_url(url: str | os.PathLike[str] | StoreURL) -> StoreURL:
    """Parse a local path, ``file://``, ``memory://`` or ``s3://`` URL."""
    if isinstance(url, StoreURL):
        return url
    text = os.fspath(url)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # len 1: a Windows drive
        path = parsed.path if parsed.scheme == "file" else text
        return StoreURL("file", str(Path(path).expanduser().absolute()))
    if parsed.scheme == "memory":
        return StoreURL("memory", (parsed.netloc + parsed.path).strip("/"))
    if parsed.scheme in ("s3", "s3a"):
        if not parsed.netloc:
            raise ValueError(f"S3 URL {text!r} names no bucket: use s3://bucket/prefix")
        return StoreURL("s3", (parsed.netloc + parsed.path).rstrip("/"))
    raise ValueError(
        f"unsupported URL scheme {parsed.scheme!r} in {text!r}: "
        "use a local path, file://, memory:// or s3://"
    )


def open_store(
    url: str | os.PathLike[str] | StoreURL,
    *,
    read_only: bool = False,
    s3: S3Options | None = None,
) -> Store:
    """Open the Zarr store behind ``url``.

    ``memory://`` stores live for the life of the process and are shared by
    every opener of the same name in it, like fsspec's memory filesystem.
    """
    loc = parse_url(url)
    if loc.scheme == "file":
        return LocalStore(loc.path, read_only=read_only)
    if loc.scheme == "memory":
        with _MEMORY_LOCK:
            backing = _MEMORY_STORES.setdefault(loc.path, {})
        return MemoryStore(backing, read_only=read_only)
    options = (s3 or S3Options.from_env()).storage_options()
    return FsspecStore.from_url(f"s3://{loc.path}", storage_options=options, read_only=read_only)


def forget_memory_store(url: str) -> None:
    """Drop a ``memory://`` store's contents (tests and benchmarks)."""
    loc = parse_url(url)
    with _MEMORY_LOCK:
        _MEMORY_STORES.pop(loc.path, None)


def redact(text: str, options: S3Options | None) -> str:
    """Remove ``options``' key and secret from ``text``."""
    if options is None:
        return text
    for secret in (options.key, options.secret):
        if secret:
            text = text.replace(secret, "***")
    return text
