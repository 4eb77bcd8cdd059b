"""System checks for live models: streams nobody can read, hooks nobody asks, and capture
triggers that no longer match their registration.

Ids ``realtime.W101`` and up (the live-model range), so they never collide with the core's.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.checks import Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured


def _example(template: str) -> str:
    """A stream name the template produces (each placeholder as ``1``)."""
    return re.sub(r"\{[^{}]*\}", "1", template)


@register(Tags.compatibility)
def check_live_models(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from realtime.conf import realtime_settings
    from realtime.core import policy
    from realtime.live.access import rule as live_rule
    from realtime.live.receivers import registry

    try:
        if not issubclass(realtime_settings.POLICY, policy.RulesPolicy):
            return []  # a custom policy decides; nothing to compare with
        rules = policy.rules()
    except ImproperlyConfigured:
        return []  # realtime.E001 reports it
    warnings: list[Any] = []
    for model, live in registry.items():
        for template in live.templates:
            stream = _example(template.template)
            matched = next((r for r in rules if r.regex.fullmatch(stream)), None)
            if matched is None:
                warnings.append(
                    Warning(
                        f"Live model {model._meta.label} publishes to {template.template!r}, "
                        f"which no REALTIME['RULES'] pattern matches: nobody can subscribe.",
                        hint=f"Add {template.pattern!r}: 'realtime.live.rule' to RULES.",
                        obj=model,
                        id="realtime.W101",
                    )
                )
            elif live.can_subscribe is not None and matched.check is not live_rule:
                warnings.append(
                    Warning(
                        f"Live model {model._meta.label} has can_subscribe, but RULES "
                        f"pattern {matched.pattern!r} decides for {template.template!r}, so "
                        f"it is never asked.",
                        hint=f"Route {template.pattern!r} to 'realtime.live.rule'.",
                        obj=model,
                        id="realtime.W102",
                    )
                )
    return warnings


@register(Tags.database)
def check_capture_triggers(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """``realtime.W103``: a PostgreSQL capture trigger that no longer matches its model's
    registration (regenerate its migration). Runs where database checks run (``migrate``,
    ``check --database``)."""
    from django.db import connections, router

    from realtime.live import triggers
    from realtime.live.receivers import registry

    warnings: list[Any] = []
    for model, live in registry.items():
        using = router.db_for_write(model)
        if not databases or using not in databases or connections[using].vendor != "postgresql":
            continue
        try:
            install, _ = triggers.sql(live)
        except ImproperlyConfigured:
            continue  # no trigger can be made for it: nothing to compare
        with connections[using].cursor() as cursor:
            cursor.execute(
                "SELECT prosrc FROM pg_proc WHERE proname = %s", [triggers.function_name(model)]
            )
            found = cursor.fetchone()
        if found is not None and found[0] != triggers.body(install):
            warnings.append(
                Warning(
                    f"The capture trigger of live model {model._meta.label} in database "
                    f"{using!r} does not match its live.register() options: writes outside "
                    f"the ORM publish what the old options said.",
                    hint=f"Run manage.py realtime_capture_triggers {model._meta.app_label} "
                    f"--model {model.__name__}, then migrate.",
                    obj=model,
                    id="realtime.W103",
                )
            )
    return warnings
