"""``{% realtime_client %}``: the import map, preload hint and configuration it renders."""

from __future__ import annotations

import json
import re

import pytest
from django.template import Context, Template
from django.test import RequestFactory, override_settings

CLIENT_URL = "/static/realtime/realtime.js"


def render(source: str, **context: object) -> str:
    return Template("{% load realtime %}" + source).render(Context(context))


def config_of(html: str) -> dict[str, object]:
    match = re.search(r'<script id="realtime-config" type="application/json">(.*?)</script>', html)
    assert match, html
    return json.loads(match.group(1))


def test_client_tag_maps_the_module_and_configures_the_client() -> None:
    request = RequestFactory().get("/chat/")
    html = render("{% realtime_client %}", request=request)
    importmap = re.search(r'<script type="importmap">(.*?)</script>', html)
    assert importmap and json.loads(importmap.group(1)) == {"imports": {"realtime": CLIENT_URL}}
    assert f'<link rel="modulepreload" href="{CLIENT_URL}">' in html
    # The modules it imports are preloaded too (fetched at once, not level by level).
    assert '<link rel="modulepreload" href="/static/realtime/client/connection.js">' in html
    assert config_of(html) == {
        "prefix": "/realtime/",
        "csrfCookieName": "csrftoken",
        "csrfHeaderName": "X-CSRFTOKEN",
    }
    # Like {% csrf_token %}, the tag makes the response set the cookie the client reads.
    assert request.META.get("CSRF_COOKIE_NEEDS_UPDATE") is True


def test_client_tag_options_go_into_the_config_escaped() -> None:
    html = render('{% realtime_client importmap=False debug=True note="</script><b>" %}')
    assert "importmap" not in html
    assert "</script><b>" not in html
    config = config_of(html)
    assert config["debug"] is True and config["note"] == "</script><b>"


@pytest.mark.parametrize("setting", ["CSRF_COOKIE_HTTPONLY", "CSRF_USE_SESSIONS"])
def test_client_tag_passes_the_csrf_token_when_scripts_cannot_read_the_cookie(
    setting: str,
) -> None:
    request = RequestFactory().get("/")
    request.session = {}  # type: ignore[attr-defined]  # CSRF_USE_SESSIONS keeps it there
    with override_settings(**{setting: True}):
        config = config_of(render("{% realtime_client %}", request=request))
    assert isinstance(config["csrfToken"], str) and len(config["csrfToken"]) == 64


def test_client_url_tag() -> None:
    assert render("{% realtime_client_url %}") == CLIENT_URL
