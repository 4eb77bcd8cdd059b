from django.apps import AppConfig


class LiveCaptureConfig(AppConfig):
    """Test-only live models for capture (``realtime.live.capture`` and ``.triggers``): a
    foreign key of each ``on_delete`` kind, a stream that moves with a field, and the types
    whose JSON must match between the Python path and the PostgreSQL trigger."""

    name = "tests.live_capture"
    label = "live_capture"
    default_auto_field = "django.db.models.BigAutoField"
