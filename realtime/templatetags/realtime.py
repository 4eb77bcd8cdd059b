"""``{% load realtime %}{% realtime_client %}``: put the browser client on a page.

The tag renders ``realtime/client.html``: an import map that names the module ``realtime``
(so page scripts write ``import { connect } from "realtime"`` whatever URL staticfiles gives
it, hashed names included), ``modulepreload`` hints for it and the modules it imports (so the
browser fetches them at once rather than one level of imports after another), and the
client's configuration as JSON
(where the app is mounted, the CSRF cookie and header names), which ``connect()`` reads.
Override the template to change the markup; options of ``connect()`` given to the tag go
into the configuration::

    {% realtime_client debug=True fallbackAfter=1 %}
    {% realtime_client importmap=False %}   {# the page has its own import map #}
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin

from django import template
from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

CLIENT_PATH = "realtime/realtime.js"
# The modules realtime.js imports, directly or not (tests/unit/test_client_static.py keeps this
# list equal to the import graph), relative to it.
CLIENT_MODULES = (
    "client/client.js",
    "client/codes.js",
    "client/connection.js",
    "client/emitter.js",
    "client/encoding.js",
    "client/http.js",
    "client/liveness.js",
    "client/options.js",
    "client/outbox.js",
    "client/page.js",
    "client/policy.js",
    "client/presence.js",
    "client/publish.js",
    "client/sse.js",
    "client/state.js",
    "client/subscription.js",
    "client/ticker.js",
    "client/upgrade.js",
    "client/websocket.js",
)


def _prefix() -> str:
    """Where ``realtime.urls`` is mounted (``/realtime/`` in the documented setup)."""
    try:
        return reverse("realtime:heartbeat").removesuffix("heartbeat/")
    except NoReverseMatch:
        return "/realtime/"


def _module_urls(client_url: str) -> list[str]:
    """The URLs the browser resolves realtime.js's imports to, given its URL: relative to it,
    unless the storage rewrites module imports to hashed names (ManifestStaticFilesStorage
    with ``support_js_module_import_aggregation``)."""
    if getattr(staticfiles_storage, "support_js_module_import_aggregation", False):
        base = CLIENT_PATH.rpartition("/")[0]
        return [static(f"{base}/{module}") for module in CLIENT_MODULES]
    return [urljoin(client_url, module) for module in CLIENT_MODULES]


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
        "realtime_modules": _module_urls(url),
        "realtime_importmap": _script_json({"imports": {"realtime": url}}) if importmap else "",
        "realtime_config": config,
    }
