"""The REST API: publish, read history, list streams, see presence and connections over HTTP.

Mounted with the app's URLs (``path("realtime/", include("realtime.urls"))`` serves it under
``/realtime/api/``). It follows the same stream policy as the WebSocket and SSE endpoints;
publishing is also open to staff users and to backends holding a server API token
(``REALTIME["API_TOKENS"]``). ``docs/api.md`` is the reference; the OpenAPI schema
(drf-spectacular, ``realtime.api.schema``) is served at ``api/schema/``.
"""
