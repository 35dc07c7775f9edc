"""Running a config: validate everything, connect the cluster, run the workflow."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from neurochunk.stores import S3Options, TierConfig

from .config import RUN_SCHEMA, ConfigError, load_config, run_schema, validate
from .registry import workflow_module

__all__ = ["prepare", "run_config", "store_options"]


def store_options(store: dict[str, Any] | None) -> dict[str, Any]:
    """``Dataset.create``/``open`` keyword arguments from a validated ``store:`` section."""
    if not store:
        return {}
    opts: dict[str, Any] = {}
    if store.get("tiers"):
        opts["tiers"] = TierConfig(**store["tiers"])
    if store.get("s3"):
        opts["s3"] = S3Options.from_env(**store["s3"])
    return opts


def prepare(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    """Load and fully validate a run config; return ``(config, workflow module)``."""
    data, source = load_config(path)
    top = validate(data, RUN_SCHEMA, source)
    try:
        module = workflow_module(top["workflow"])
    except KeyError as exc:
        raise ConfigError(source, "workflow", str(exc.args[0])) from None
    cfg = validate(data, run_schema(module.PARAMS), source)
    cfg["_source"] = source
    from neurochunk.cluster import ClusterConfig

    try:
        ClusterConfig.from_dict(_strip_none(cfg.get("cluster")))
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, "cluster", str(exc)) from None
    if hasattr(module, "check"):
        module.check(cfg)  # cross-field checks; raises ConfigError
    return cfg, module


def _strip_none(d: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (d or {}).items() if v is not None}


@contextlib.contextmanager
def _maybe_report(client: Any, report: str | None) -> Iterator[None]:
    if report is None:
        yield
        return
    from distributed import performance_report

    with performance_report(filename=report):
        yield


def run_config(path: str | os.PathLike[str], *, report: str | None = None, client: Any = None) -> dict[str, Any]:
    """Validate ``path``, connect its cluster, run its workflow and return the summary."""
    cfg, module = prepare(path)
    own = client is None
    if own:
        from neurochunk.cluster import connect

        client = connect(_strip_none(cfg.get("cluster")))
    try:
        t0 = time.perf_counter()
        with _maybe_report(client, report):
            summary = module.run(cfg, client)
        summary = {"workflow": cfg["workflow"], "wall_s": round(time.perf_counter() - t0, 3), **summary}
        if report:
            summary["report"] = report
        return summary
    finally:
        if own:
            client.close()
