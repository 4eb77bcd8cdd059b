from __future__ import annotations

from django.apps import AppConfig, apps
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_delete, post_save, pre_save


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from realtime import checks  # noqa: F401  (its checks register themselves)
        from realtime.core import revocation

        user_logged_out.connect(revocation.on_logged_out, dispatch_uid="realtime.logged_out")
        pre_save.connect(
            revocation.on_user_pre_save,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="realtime.user_pre_save",
        )
        post_save.connect(
            revocation.on_user_post_save,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="realtime.user_post_save",
        )
        if apps.is_installed("rest_framework.authtoken"):
            post_delete.connect(
                revocation.on_token_deleted,
                sender="authtoken.Token",
                dispatch_uid="realtime.token_deleted",
            )
