"""Backplanes: how the hubs of several server processes reach each other.

``backplane()`` is the one ``REALTIME["BACKPLANE"]`` names: ``None`` (the default) for the
Channels layer (``channels``), a ``nats://`` or ``tls://`` URL for NATS (``nats``), a
``redis-cluster://`` URL for Redis Cluster's sharded pub/sub (``rediscluster``). Each is a
``Backplane`` (``base``); docs/deployment.md says how to choose.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from realtime.bus.backends.base import Backplane, BackplaneInterrupted
from realtime.conf import realtime_settings

NATS_SCHEMES = ("nats", "tls")


@realtime_settings.derived
@lru_cache(maxsize=1)
def backplane() -> Backplane:
    """The process's backplane, made on first use (again after the settings change)."""
    url = realtime_settings.BACKPLANE
    if url is None:
        from realtime.bus.backends.channels import ChannelLayerBackplane

        return ChannelLayerBackplane()
    if urlsplit(url).scheme in NATS_SCHEMES:
        try:
            from realtime.bus.backends.nats import NatsBackplane
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"REALTIME['BACKPLANE'] = {url!r} needs nats-py: "
                f"pip install 'django-realtime[nats]' ({exc})."
            ) from exc
        return NatsBackplane.from_url(url)
    if urlsplit(url).scheme == "redis-cluster":
        from realtime.bus.backends.rediscluster import RedisClusterBackplane

        return RedisClusterBackplane.from_url(url)
    raise ImproperlyConfigured(f"REALTIME['BACKPLANE'] = {url!r} names no backplane.")


__all__ = ["Backplane", "BackplaneInterrupted", "backplane"]
