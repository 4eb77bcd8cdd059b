"""System checks for live models: streams nobody can read, and hooks nobody asks.

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
