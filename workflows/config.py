"""Run configs: YAML files validated up front, with errors that name the file and the field."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["ConfigError", "Field", "Section", "validate", "load_config", "RUN_SCHEMA"]


class ConfigError(ValueError):
    """A config is malformed; the message names the file and the field."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.field, self.problem = source, path, problem
        super().__init__(f"{source}: field {path!r}: {problem}" if path else f"{source}: {problem}")


@dataclass(frozen=True)
class Field:
    """One config field: its type(s), default, whether required, allowed values."""

    types: type | tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    items: type | tuple[type, ...] | None = None  # element type of a list field
    help: str = ""


@dataclass(frozen=True)
class Section:
    """A nested mapping of fields; ``open`` sections accept any keys (checked elsewhere)."""

    fields: Mapping[str, Field | Section] = field(default_factory=dict)
    required: bool = False
    open: bool = False
    help: str = ""


def _type_name(t: type | tuple[type, ...]) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(x.__name__ for x in ts)


def _check_type(value: Any, types: type | tuple[type, ...]) -> bool:
    ts = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in ts:
        return False  # YAML's true is not an int
    if isinstance(value, int) and float in ts and not isinstance(value, bool):
        return True
    return isinstance(value, ts)


def validate(data: Any, schema: Section, source: str = "<config>", prefix: str = "") -> dict[str, Any]:
    """Check ``data`` against ``schema``; return it with defaults filled in."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, prefix, f"expected a mapping, got {type(data).__name__}")
    if schema.open:
        return dict(data)
    out: dict[str, Any] = {}
    unknown = sorted(set(data) - set(schema.fields))
    if unknown:
        path = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(source, path, f"unknown key; known keys here: {', '.join(sorted(schema.fields))}")
    for name, spec in schema.fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, Section):
            if name not in data or data[name] is None:
                if spec.required:
                    raise ConfigError(source, path, "is required")
                out[name] = None
                continue
            out[name] = validate(data[name], spec, source, path)
            continue
        if name not in data:
            if spec.required:
                raise ConfigError(source, path, f"is required ({_type_name(spec.types)})")
            out[name] = spec.default
            continue
        value = data[name]
        if value is None and not spec.required:
            out[name] = spec.default
            continue
        if not _check_type(value, spec.types):
            raise ConfigError(source, path, f"expected {_type_name(spec.types)}, got {type(value).__name__} {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(source, path, f"must be one of {list(spec.choices)}, got {value!r}")
        if spec.items is not None:
            for i, item in enumerate(value):
                if not _check_type(item, spec.items):
                    raise ConfigError(source, f"{path}[{i}]", f"expected {_type_name(spec.items)}, got {type(item).__name__} {item!r}")
        out[name] = value
    return out


_TIERS = Section({
    "ram_bytes": Field(int, 256 * 2**20),
    "disk_path": Field(str),
    "disk_bytes": Field(int, 16 * 2**30),
    "write": Field(str, "through", choices=("through", "back")),
    "decoded_bytes": Field(int, 0),
})
_S3 = Section({"endpoint_url": Field(str), "region": Field(str), "anon": Field(bool, False)},
              help="credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, never from the file")
STORE_SCHEMA = Section({"url": Field(str, required=True), "tiers": _TIERS, "s3": _S3, "overwrite": Field(bool, False)})
CLUSTER_SCHEMA = Section({
    "address": Field(str), "gpu": Field(bool, False), "n_workers": Field(int), "threads_per_worker": Field(int),
    "memory_limit": Field((str, int), "auto"), "dashboard_address": Field(str, "127.0.0.1:8787"),
    "processes": Field(bool, True), "timeout": Field(float, 10.0),
    "protocol": Field(str, None, choices=("tcp", "ucx"), help="ucx (with gpu): GPU arrays over NVLink"),
    "rmm_pool_size": Field((str, int), None, help="gpu: each worker's RMM pool (1GiB with protocol ucx)"),
    "device_memory_limit": Field((str, int, float), None, help="gpu: dask-cuda spilling threshold (0: off)"),
    "malloc_keep_mib": Field(int, 16, help="MiB of freed heap each worker keeps (0: Dask's default)"),
    "jobqueue": Section({
        "kind": Field(str, "slurm", choices=("slurm", "pbs", "sge", "lsf")), "queue": Field(str),
        "account": Field(str), "cores": Field(int, 1), "processes": Field(int, 1), "memory": Field(str, "4GiB"),
        "walltime": Field(str, "01:00:00"), "job_extra_directives": Field(list, [], items=str),
        "job_script_prologue": Field(list, [], items=str), "min_jobs": Field(int, 0), "max_jobs": Field(int, 1),
        "interface": Field(str), "local_directory": Field(str), "log_directory": Field(str), "python": Field(str),
    }),
    "tls": Section({"ca_file": Field(str), "cert": Field(str), "key": Field(str), "temporary": Field(bool, False)}),
})


def run_schema(params: Section) -> Section:
    """The schema of a whole run config for a workflow with ``params``."""
    return Section({
        "workflow": Field(str, required=True),
        "name": Field(str, "run"),
        "store": STORE_SCHEMA,
        "cluster": CLUSTER_SCHEMA,
        "params": params,
        "progress": Field(bool, True),
    })


RUN_SCHEMA = run_schema(Section(open=True))


def load_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """Read a YAML file; return ``(mapping, source name)`` or raise :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        with open(source) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", f"the top level must be a mapping, got {type(data).__name__}")
    return dict(data), source
