"""``realtime.serve``'s daphne protocol: autobahn's per-connection debug dump is deferred."""

from __future__ import annotations

import pprint

import pytest
from autobahn.websocket import protocol as autobahn_protocol
from daphne.ws_protocol import WebSocketProtocol as DaphneWebSocketProtocol

from realtime.endpoints import serve


def test_connections_format_autobahns_configuration_only_when_logged(monkeypatch):
    """While a connection is made, ``pformat`` in autobahn's module returns a value that
    formats on demand; afterwards it is the real one again, also when the call raises."""
    seen = []

    def made(self):
        seen.append(autobahn_protocol.pformat([("openHandshakeTimeout", 5, "Factory")]))
        raise RuntimeError("handshake failed")

    monkeypatch.setattr(DaphneWebSocketProtocol, "_connectionMade", made)
    with pytest.raises(RuntimeError):
        serve.WebSocketProtocol()._connectionMade()
    assert autobahn_protocol.pformat is pprint.pformat
    (deferred,) = seen
    assert not isinstance(deferred, str)
    assert f"\n{deferred}" == "\n" + pprint.pformat([("openHandshakeTimeout", 5, "Factory")])


def test_the_server_builds_connections_with_that_protocol():
    factory = type("Factory", (), {"setProtocolOptions": lambda self, **options: None})()
    server = serve.Server.__new__(serve.Server)
    server.ws_factory = factory
    assert factory.protocol is serve.WebSocketProtocol
