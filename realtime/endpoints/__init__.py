"""Endpoints: where clients and servers come in.

``websocket`` and ``sse`` (on ``connection``, what they share), ``views`` (tickets, SSE
heartbeats), ``auth`` (the handshake's authentication and Origin check), ``metrics`` (the
Prometheus view) and ``serve`` (daphne with the app's limits). The REST API (``realtime.api``)
and the admin pages (``realtime.admin``) are endpoints too. They use the core below them.
"""
