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


def closing_protocol(monkeypatch):
    """A realtime.serve protocol in the open state, recording how it closes."""
    sent = []
    monkeypatch.setattr(
        DaphneWebSocketProtocol,
        "handle_reply",
        lambda self, message: sent.append(("daphne", message)),
    )
    proto = serve.WebSocketProtocol()
    proto.state = proto.STATE_OPEN
    proto.sendCloseFrame = lambda code, reasonUtf8: sent.append(("frame", code, reasonUtf8))
    return proto, sent


def test_a_restart_close_goes_out_with_its_code_and_reason(monkeypatch):
    """autobahn's sendClose refuses 1012 and daphne drops the reason: the drain's close is
    sent as a close frame of its own."""
    proto, sent = closing_protocol(monkeypatch)
    proto.handle_reply({"type": "websocket.close", "code": 1012, "reason": '{"retry":1234}'})
    assert sent == [("frame", 1012, b'{"retry":1234}')]


def test_other_closes_and_messages_go_through_daphne(monkeypatch):
    proto, sent = closing_protocol(monkeypatch)
    proto.handle_reply({"type": "websocket.close", "code": 4409})
    proto.handle_reply({"type": "websocket.send", "text": "{}"})
    assert [kind for kind, *_ in sent] == ["daphne", "daphne"]


def test_a_close_reason_is_cut_to_what_a_close_frame_holds(monkeypatch):
    proto, sent = closing_protocol(monkeypatch)
    proto.handle_reply({"type": "websocket.close", "code": 4000, "reason": "x" * 200})
    assert sent == [("frame", 4000, b"x" * 123)]
    proto.handle_reply({"type": "websocket.close", "code": 4000, "reason": "x" + "é" * 100})
    assert sent[-1] == ("frame", 4000, ("x" + "é" * 61).encode())  # 123 bytes, whole characters
