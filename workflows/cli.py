"""The ``neurochunk`` command line: run, info, plot, cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run_config

    summary = run_config(args.config, report=args.report)
    text = summary.pop("info", None)
    print(json.dumps(summary, indent=2, default=str))
    if text:
        print(text)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from neurochunk.stores import Dataset

    from .info import format_info

    ds = Dataset.open(args.url)
    info = ds.info()
    print(json.dumps(info, indent=2, default=str) if args.json else format_info(info))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    import importlib

    from neurochunk.stores import Dataset

    from .registry import PLOTTERS

    ds = Dataset.open(args.url)
    module_name = PLOTTERS.get(ds.kind)
    if module_name is None:
        raise SystemExit(f"neurochunk plot: no plot for {ds.kind!r} datasets ({ds.url})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in importlib.import_module(module_name).plot(ds, str(out)):
        print(path)
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from neurochunk.cluster import ClusterConfig
    from neurochunk.cluster.jobqueue import job_script

    from .run import _strip_none, prepare

    cfg, _ = prepare(args.config)
    if args.print_job_script:
        print(job_script(ClusterConfig.from_dict(_strip_none(cfg.get("cluster")))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurochunk",
        description="Out-of-core, GPU-fast pipelines for brain-scale neuroscience on Dask and Zarr.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="validate a YAML config and run its workflow")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--report", metavar="FILE", help="write a Dask performance_report HTML file")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("info", help="describe a dataset: kind, arrays, codecs, bytes, commits, tiers")
    p.add_argument("url", help="local path, file://, memory:// or s3:// URL")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("plot", help="draw a dataset as PNGs (rasters, slices, histograms)")
    p.add_argument("url")
    p.add_argument("--out", default=".", help="output folder (default: current)")
    p.set_defaults(func=_cmd_plot)
    p = sub.add_parser("cluster", help="inspect the cluster a config would start")
    p.add_argument("config")
    p.add_argument("--print-job-script", action="store_true", help="print the HPC batch script")
    p.set_defaults(func=_cmd_cluster)
    return parser


def main(argv: list[str] | None = None) -> int:
    from neurochunk.stores import SchemaError

    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, SchemaError, FileNotFoundError) as exc:
        print(f"neurochunk: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
