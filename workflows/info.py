"""``neurochunk info``: describe any dataset in words a person reads."""

from __future__ import annotations

from typing import Any

__all__ = ["format_info", "human_bytes"]


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_info(info: dict[str, Any]) -> str:
    """Render :meth:`neurochunk.stores.Dataset.info` as a text report."""
    lines = [f"dataset  {info['url']}", f"kind     {info['kind']}"]
    extra = {k: v for k, v in info["attrs"].items() if k not in ("kind", "schema_version")}
    if extra:
        lines.append("attrs    " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    total_mem = sum(a["nbytes"] for a in info["arrays"].values())
    total_stored = sum(a["nbytes_stored"] for a in info["arrays"].values())
    lines.append(f"arrays   {len(info['arrays'])}  ({human_bytes(total_mem)} in memory, "
                 f"{human_bytes(total_stored)} stored)")
    for name, a in info["arrays"].items():
        dims = ", ".join(f"{d}={s}" for d, s in zip(a["dims"], a["shape"], strict=False)) or str(a["shape"])
        bound = a["error_bound"]
        bound_s = f" (error <= {' or '.join(f'{v:.2g} {k}' for k, v in bound.items())})" if bound else ""
        lines.append(
            f"  {name:<14} {a['dtype']:<8} ({dims})  chunks {a['chunks']}"
            + (f" shards {a['shards']}" if a["shards"] else "")
            + f"  codec {a['codec']}{bound_s} [{' > '.join(a['codecs'])}]"
            + f"  {human_bytes(a['nbytes'])} -> {human_bytes(a['nbytes_stored'])} (x{a['ratio']:.2f})"
        )
    commits = info["commits"]
    lines.append(f"commits  {len(commits)}" + (f" (latest: {commits[-1]['name']} #{commits[-1]['seq']} at {commits[-1]['time']})" if commits else ""))
    if info.get("tiers"):
        for tier, s in info["tiers"].items():
            lines.append(f"  tier {tier:<6} requests {s['requests']:>7}  hits {s['hits']:>7}  misses {s['misses']:>7}  "
                         f"read {human_bytes(s['bytes_read'])}  written {human_bytes(s['bytes_written'])}"
                         + (f"  held {human_bytes(s['bytes_held'])}" if tier != "origin" else ""))
    if info.get("s3"):
        lines.append(f"s3       endpoint {info['s3']['endpoint_url']}, credentials {info['s3']['credentials']}")
    return "\n".join(lines)
