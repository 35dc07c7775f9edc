"""Counters gathered from every worker: store tiers."""

from __future__ import annotations

from typing import Any

from neurochunk.stores import tier_stats_all

__all__ = ["tier_stats"]

_SUMMED = ("requests", "hits", "misses", "bytes_read", "bytes_written", "evictions", "bytes_held")


def tier_stats(client: Any = None, token: str | None = None) -> dict[str, dict[str, float]]:
    """Tier counters summed over this process and, with a client, every worker.

    ``token`` restricts them to one tiered store (``Dataset.tiers.token``).
    """
    per_process = [tier_stats_all()]
    if client is not None:
        per_process += list(client.run(tier_stats_all).values())
    total: dict[str, dict[str, float]] = {}
    for stats in per_process:
        for tok, tiers in stats.items():
            if token is not None and tok != token:
                continue
            for tier, counters in tiers.items():
                acc = total.setdefault(tier, dict.fromkeys(_SUMMED, 0))
                for k in _SUMMED:
                    acc[k] += counters[k]
    for acc in total.values():
        acc["hit_rate"] = acc["hits"] / acc["requests"] if acc["requests"] else 0.0
    return total
