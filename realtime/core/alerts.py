"""Thresholds on a process's own figures, checked every ``STATS_INTERVAL`` seconds.

``REALTIME["ALERTS"]`` names the thresholds (None turns one off). When a figure goes over,
the process logs a WARNING and sends ``realtime.signals.alert_raised`` once; when it comes
back under, it logs and sends ``alert_cleared``. The admin dashboard shows what is active.
"""

from __future__ import annotations

import logging
from typing import Any

from realtime import signals
from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.alerts")

_active: dict[str, dict[str, Any]] = {}


def figures(described: dict[str, Any]) -> dict[str, float]:
    """The values the thresholds apply to, from ``Hub.describe()``."""
    counters = described["stats"]
    rates = described.get("rates") or {}
    return {
        "connections_per_process": float(sum(counters["connections"].values())),
        "deliveries_per_second": float(rates.get("deliveries_per_second", 0.0)),
        "slow_consumer_drops_per_second": float(rates.get("slow_consumer_drops_per_second", 0.0)),
        "sweeper_lag_seconds": float(counters.get("sweeper_lag", 0.0)),
    }


def evaluate(server: str, described: dict[str, Any]) -> None:
    """Raise or clear each alert whose threshold this tick crosses."""
    thresholds = realtime_settings.ALERTS
    for name, value in figures(described).items():
        threshold = thresholds.get(name)
        over = threshold is not None and value > float(threshold)
        details = {"name": name, "value": value, "threshold": threshold, "server": server}
        if over and name not in _active:
            _active[name] = details
            logger.warning(
                "Alert %s: %.4g is over %s on server %s.", name, value, threshold, server
            )
            signals.alert_raised.send(sender=None, **details)
        elif over:
            _active[name] = details
        elif name in _active:
            del _active[name]
            logger.warning("Alert %s cleared: %.4g (threshold %s).", name, value, threshold)
            signals.alert_cleared.send(sender=None, **details)


def active() -> list[dict[str, Any]]:
    """The alerts raised on this process and not cleared yet."""
    return list(_active.values())


def reset() -> None:
    _active.clear()
