"""Public path of the Prometheus view; the code is ``realtime.endpoints.metrics``."""

from realtime.endpoints.metrics import metrics_view

__all__ = ["metrics_view"]
