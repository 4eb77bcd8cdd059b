"""``{% load realtime %}{% realtime_client %}``: put the browser client on a page.

The tag renders ``realtime/client.html``: an import map that names the module ``realtime``
(so page scripts write ``import { connect } from "realtime"`` whatever URL staticfiles gives
it, hashed names included), a ``modulepreload`` hint, and the client's configuration as JSON
(where the app is mounted, the CSRF cookie and header names), which ``connect()`` reads.
Override the template to change the markup; options of ``connect()`` given to the tag go
into the configuration::

    {% realtime_client debug=True fallbackAfter=1 %}
    {% realtime_client importmap=False %}   {# the page has its own import map #}
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.conf import settings
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

CLIENT_PATH = "realtime/realtime.js"


def _prefix() -> str:
    """Where ``realtime.urls`` is mounted (``/realtime/`` in the documented setup)."""
    try:
        return reverse("realtime:heartbeat").removesuffix("heartbeat/")
    except NoReverseMatch:
        return "/realtime/"


def _csrf_header_name() -> str:
    """The header Django reads the CSRF token from, as a browser sends it."""
    meta_name = str(settings.CSRF_HEADER_NAME)  # e.g. "HTTP_X_CSRFTOKEN"
    return meta_name.removeprefix("HTTP_").replace("_", "-")


# As json_script escapes: JSON text that cannot end the <script> element it sits in.
_SCRIPT_ESCAPES = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


def _script_json(value: Any) -> SafeString:
    return mark_safe(json.dumps(value).translate(_SCRIPT_ESCAPES))


@register.simple_tag
def realtime_client_url() -> str:
    """The URL of ``realtime.js`` (for an import map of your own)."""
    return static(CLIENT_PATH)


@register.inclusion_tag("realtime/client.html", takes_context=True)
def realtime_client(
    context: template.Context, importmap: bool = True, **options: Any
) -> dict[str, Any]:
    """The client's import map, preload hint and configuration (see the module docstring)."""
    config: dict[str, Any] = {
        "prefix": _prefix(),
        "csrfCookieName": settings.CSRF_COOKIE_NAME,
        "csrfHeaderName": _csrf_header_name(),
    }
    request = context.get("request")
    if request is not None:
        # Like {% csrf_token %}: makes sure the response sets the CSRF cookie the client
        # reads; where scripts cannot read that cookie, the token goes in the config.
        token = get_token(request)
        if settings.CSRF_USE_SESSIONS or settings.CSRF_COOKIE_HTTPONLY:
            config["csrfToken"] = token
    config.update(options)
    url = static(CLIENT_PATH)
    return {
        "realtime_url": url,
        "realtime_importmap": _script_json({"imports": {"realtime": url}}) if importmap else "",
        "realtime_config": config,
    }
