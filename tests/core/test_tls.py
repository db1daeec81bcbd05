"""``TlsLayer`` on its own: arguments, the ``SSLObject`` facts it relies on, error texts.

Two layers are joined here by moving ciphertext between their inner flows by hand (``link``),
so that each test decides exactly what reaches the other side. ``tests/core/test_tls_pair.py``
runs the layer over ``FlowPair``. The helpers below serve both files.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trustme

from sansflow import (
    WOULD_WAIT,
    Eof,
    Error,
    ErrorKind,
    Flow,
    FlowError,
    FlowState,
    Ok,
    ReceiveState,
    SendState,
    Shutdown,
    TlsInfo,
    TlsLayer,
    error_message,
)

# -- helpers shared with test_tls_pair.py ----------------------------------------------------------

CA = trustme.CA()
SERVER_CERT = CA.issue_cert("localhost")
VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]
VERSION_NAMES = {ssl.TLSVersion.TLSv1_3: "TLSv1.3", ssl.TLSVersion.TLSv1_2: "TLSv1.2"}


def server_context(version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
                   cert: trustme.LeafCert = SERVER_CERT) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    context.maximum_version = version
    return context


def client_context(version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
                   ca: trustme.CA = CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    context.maximum_version = version
    return context


def state(flow: Flow) -> FlowState:
    return flow.state  # a call, so that mypy does not narrow it across the calls that change it


def read_all(flow: Flow) -> tuple[bytes, object]:
    """Everything readable now, and what ended it (``WOULD_WAIT``, ``Eof()`` or an ``Error``)."""
    data = b""
    while isinstance(result := flow.read(), Ok):
        data += result.value
    return data, result


def bio_bytes(layer: TlsLayer) -> int:
    """Ciphertext inside the layer's MemoryBIOs: not part of the API, but the memory it holds."""
    return int(layer._outgoing.pending + layer._incoming.pending)


def settle(step: Callable[[], object], *layers: TlsLayer) -> None:
    """Alternate ``step`` (moves ciphertext between the inner flows) and every layer's
    ``step()`` until the layers have nothing more to do."""
    for _ in range(1000):  # a handful of rounds settle any exchange; more is a livelock
        step()
        moved = [layer.step() for layer in layers]  # every layer steps, even after one moved
        if not any(moved):
            return
    raise AssertionError("the layers never settled")


@dataclass
class Link:
    """Two layers whose inner flows ``move()`` joins without loss, EOF included."""

    client: TlsLayer
    server: TlsLayer

    def move(self) -> None:
        for sender, receiver in ((self.client.inner, self.server.inner),
                                 (self.server.inner, self.client.inner)):
            for buffer in sender.buffers_to_send():
                receiver.receive_data(bytes(buffer))
            sender.sent(sender.queued)
            if sender.eof_due:
                sender.eof_sent()
                receiver.receive_eof()

    def settle(self) -> None:
        settle(self.move, self.client, self.server)


def link(client: ssl.SSLContext | None = None, server: ssl.SSLContext | None = None,
         **options: Any) -> Link:
    return Link(
        TlsLayer(Flow(), client or client_context(), server_hostname="localhost", **options),
        TlsLayer(Flow(), server or server_context(), server_side=True),
    )


# -- arguments -------------------------------------------------------------------------------------


def test_a_layer_starts_handshaking_and_touches_nothing() -> None:
    inner = Flow()
    layer = TlsLayer(inner, client_context(), server_hostname="localhost")
    assert layer.inner is inner
    assert isinstance(layer.outer, Flow)
    assert layer.outer is not inner
    assert not layer.handshake_done
    assert layer.tls is None
    assert (inner.queued, state(inner)) == (0, FlowState.OPEN)  # nothing before step()
    assert repr(layer) == f"<TlsLayer client handshaking outer={layer.outer!r} inner={inner!r}>"


def test_the_ssl_object_is_there_to_inspect_the_session() -> None:
    pair = link()
    client = pair.client.ssl_object
    assert isinstance(client, ssl.SSLObject)
    assert client is pair.client.ssl_object  # the session itself, not a copy
    assert (client.server_side, pair.server.ssl_object.server_side) == (False, True)
    assert client.cipher() is None  # before the handshake
    pair.settle()
    peer = client.getpeercert()
    assert peer is not None
    assert peer["subjectAltName"] == (("DNS", "localhost"),)
    assert pair.client.tls is not None
    assert client.cipher() == pair.server.ssl_object.cipher()
    assert client.version() == pair.client.tls.version
    with pytest.raises(AttributeError):
        pair.client.ssl_object = pair.server.ssl_object  # type: ignore[misc]


def test_the_outer_flow_takes_the_sizes() -> None:
    layer = TlsLayer(Flow(), server_context(), server_side=True, high_water=10, low_water=3,
                     receive_limit=7)
    outer = layer.outer
    assert (outer.high_water, outer.low_water, outer.receive_limit) == (10, 3, 7)


@pytest.mark.parametrize(("arguments", "exception", "message"), [
    ({"inner": b"flow"}, TypeError, "inner must be a sansflow.Flow, not bytes"),
    ({"ssl_context": True}, TypeError, "ssl_context must be an ssl.SSLContext, not bool"),
    ({"ssl_context": ssl.PROTOCOL_TLS_CLIENT}, TypeError,
     "ssl_context must be an ssl.SSLContext, not _SSLMethod"),
    ({"server_side": 1}, TypeError, r"server_side must be a bool, not int \(1\)"),
    ({"require_close_notify": None}, TypeError,
     r"require_close_notify must be a bool, not NoneType \(None\)"),
    ({"server_hostname": b"localhost"}, TypeError,
     "server_hostname must be a str or None, not bytes"),
    ({"high_water": 0}, ValueError, "high_water must be at least 1, not 0"),
    ({"low_water": 10**6}, ValueError, "low_water .* must not exceed high_water"),
    ({"receive_limit": 1.5}, TypeError, "receive_limit must be an int, not float"),
])
def test_bad_arguments_raise_and_change_nothing(arguments: dict[str, Any],
                                                exception: type[Exception],
                                                message: str) -> None:
    inner = Flow()
    inner.write(b"plaintext before TLS")
    called: dict[str, Any] = {"inner": inner, "ssl_context": client_context(),
                              "server_hostname": "localhost"}
    with pytest.raises(exception, match=message):
        TlsLayer(**{**called, **arguments})
    assert (inner.queued, state(inner)) == (20, FlowState.OPEN)


def test_a_server_takes_no_server_hostname() -> None:
    with pytest.raises(ValueError, match="server_hostname \\('localhost'\\) is the name a client "
                                         "asks for; a server sees it in its context's "
                                         "sni_callback"):
        TlsLayer(Flow(), server_context(), server_side=True, server_hostname="localhost")


def test_a_client_that_checks_names_needs_one() -> None:
    # ssl.SSLObject would go ahead and accept a trusted certificate for any name.
    with pytest.raises(ValueError, match=r"ssl_context checks the server's name \(check_hostname\)"
                                         " but server_hostname is None; pass the name to check"):
        TlsLayer(Flow(), client_context())
    context = client_context()
    context.check_hostname = False
    assert TlsLayer(Flow(), context).tls is None  # a client that checks no name needs none


def test_a_context_made_for_the_other_side_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape(
        "ssl_context was made with ssl.PROTOCOL_TLS_SERVER, which cannot be a client; pass "
        "server_side=True or a context made for the client side"
    )):
        TlsLayer(Flow(), server_context())
    with pytest.raises(ValueError, match=re.escape(
        "ssl_context was made with ssl.PROTOCOL_TLS_CLIENT, which cannot be a server; pass "
        "server_side=False or a context made for the server side"
    )):
        TlsLayer(Flow(), client_context(), server_side=True)


def test_a_context_that_ignores_unexpected_eof_is_refused_unless_lenient() -> None:
    context = client_context()
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    options = context.options
    with pytest.raises(ValueError, match=r"ssl_context has ssl\.OP_IGNORE_UNEXPECTED_EOF, "
                                         r"which hides truncation .*; pass "
                                         r"require_close_notify=False"):
        TlsLayer(Flow(), context, server_hostname="localhost")
    layer = TlsLayer(Flow(), context, server_hostname="localhost", require_close_notify=False)
    assert not layer.handshake_done
    assert context.options == options  # the caller's context is never changed


def test_a_strict_layer_leaves_the_context_as_it_was() -> None:
    context = client_context()
    options = context.options
    TlsLayer(Flow(), context, server_hostname="localhost", require_close_notify=False)
    TlsLayer(Flow(), context, server_hostname="localhost")
    assert context.options == options
    assert not context.options & ssl.OP_IGNORE_UNEXPECTED_EOF


@pytest.mark.parametrize("end", [
    lambda flow: flow.shutdown(Shutdown.WRITE),
    lambda flow: flow.shutdown(Shutdown.READ),
    lambda flow: flow.receive_eof(),
    lambda flow: flow.abort(),
])
def test_an_inner_flow_that_is_not_open_both_ways_is_refused(end: Callable[[Flow], None]
                                                             ) -> None:
    inner = Flow()
    end(inner)
    before = repr(inner)
    with pytest.raises(ValueError, match="inner must be open both ways to start TLS, not <Flow"):
        TlsLayer(inner, client_context(), server_hostname="localhost")
    assert repr(inner) == before


# -- the SSLObject facts the layer relies on (research notes 1.2 A), through the layer -------------


@pytest.mark.parametrize("version", VERSIONS)
def test_writes_before_the_handshake_wait_in_the_outer_flow(version: ssl.TLSVersion) -> None:
    pair = link(client_context(version), server_context(version))
    client = pair.client
    assert client.outer.write(b"early") == Ok(None)
    client.outer.shutdown(Shutdown.WRITE)
    assert client.step()
    # The ClientHello went below; the plaintext and our EOF wait for the handshake.
    assert client.inner.queued > 0
    assert (client.outer.queued, client.outer.send_state) == (5, SendState.EOF_QUEUED)
    assert not client.step()  # nothing more until the server answers
    pair.settle()
    assert client.handshake_done
    assert pair.server.handshake_done
    assert client.outer.send_state is SendState.EOF_SENT
    assert read_all(pair.server.outer) == (b"early", Eof())


@pytest.mark.parametrize("version", VERSIONS)
def test_half_close_both_eof_shapes(version: ssl.TLSVersion) -> None:
    pair = link(client_context(version), server_context(version))
    client, server = pair.client.outer, pair.server.outer
    client.write(b"request")
    client.shutdown(Shutdown.WRITE)  # unwrap(): our close_notify
    pair.settle()
    assert client.write(b"more") == Eof()  # never reaches SSLObject.write (PROTOCOL_IS_SHUTDOWN)
    # The server read b'' (the close_notify alone) and may still write.
    assert read_all(server) == (b"request", Eof())
    assert state(server) is FlowState.HALF_CLOSED_REMOTE
    assert server.write(b"response") == Ok(None)
    pair.settle()
    # Reading goes on after our own close_notify.
    assert read_all(client) == (b"response", WOULD_WAIT)
    assert state(pair.client.inner) is FlowState.OPEN  # no FIN yet: one close_notify is through
    server.close()
    pair.settle()
    # The client read SSLZeroReturnError (both alerts through): Eof too.
    assert read_all(client) == (b"", Eof())
    for flow in (client, server, pair.client.inner, pair.server.inner):
        assert state(flow) is FlowState.CLOSED
        assert flow.error is None


def test_a_second_shutdown_sends_no_second_close_notify() -> None:
    pair = link()
    pair.settle()
    pair.client.outer.shutdown(Shutdown.WRITE)
    assert pair.client.step()
    sent = pair.client.inner.queued
    assert sent > 0  # the close_notify
    pair.client.outer.shutdown(Shutdown.BOTH)
    pair.client.outer.close()
    assert not pair.client.step()
    assert pair.client.inner.queued == sent


def test_empty_writes_make_no_records() -> None:
    pair = link()
    pair.settle()
    assert pair.client.outer.write(b"") == Ok(None)
    assert pair.client.outer.writev([b"", bytearray()]) == Ok(None)
    assert not pair.client.step()
    assert pair.client.inner.queued == 0


def test_step_is_idempotent_once_settled() -> None:
    pair = link()
    pair.settle()
    assert pair.client.tls is not None
    for layer in (pair.client, pair.server):
        assert not layer.step()
        assert not layer.step()


def test_taking_part_of_a_record_counts_as_a_change() -> None:
    pair = link()
    pair.settle()
    pair.server.outer.write(b"a record")
    pair.server.step()
    record = b"".join(bytes(b) for b in pair.server.inner.buffers_to_send())
    pair.client.inner.receive_data(record[:5])
    # The inner buffer is emptied (its reading may resume) though no plaintext came out yet.
    assert pair.client.step()
    assert (pair.client.inner.buffered, pair.client.outer.buffered) == (0, 0)
    assert not pair.client.step()
    pair.client.inner.receive_data(record[5:])
    assert pair.client.step()
    assert pair.client.outer.read() == Ok(b"a record")


# -- inputs the layer does not expect --------------------------------------------------------------


def test_plaintext_sent_to_a_tls_server_is_a_tls_failure() -> None:
    layer = TlsLayer(Flow(), server_context(), server_side=True)
    layer.inner.receive_data(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert layer.step()
    assert read_all(layer.outer) == (b"", Error(FlowError(ErrorKind.TLS, _cause(layer),
                                                          "http request (HTTP_REQUEST)")))
    assert error_message(_error(layer)) == "TLS failure: http request (HTTP_REQUEST)"
    assert repr(layer).startswith("<TlsLayer server failed outer=<Flow CLOSED")
    # No alert for this one: the inner flow is just shut down (a FIN) and discards input.
    assert layer.inner.queued == 0
    assert layer.inner.send_state is SendState.EOF_QUEUED
    assert layer.inner.receive_state is ReceiveState.DISCARDING
    assert not layer.step()


def test_an_eof_during_the_handshake_is_a_tls_failure_not_a_truncation() -> None:
    for require_close_notify in (True, False):
        layer = TlsLayer(Flow(), client_context(), server_hostname="localhost",
                         require_close_notify=require_close_notify)
        layer.step()
        layer.inner.receive_eof()
        assert layer.step()
        error = _error(layer)
        assert error.kind is ErrorKind.TLS
        assert isinstance(error.cause, ssl.SSLEOFError)
        assert error_message(error) == (
            "TLS failure: the peer closed the connection during the handshake"
        )
        assert layer.outer.read() == Error(error)


def test_a_close_notify_during_the_handshake_is_a_tls_failure() -> None:
    layer = TlsLayer(Flow(), client_context(), server_hostname="localhost")
    layer.outer.write(b"never sent")
    layer.step()
    layer.inner.receive_data(b"\x15\x03\x03\x00\x02\x01\x00")  # a plaintext close_notify
    assert layer.step()
    error = _error(layer)
    assert isinstance(error.cause, ssl.SSLZeroReturnError)
    assert error_message(error) == (
        "TLS failure: the peer closed the connection during the handshake"
    )
    assert layer.outer.read() == Error(error)
    assert layer.outer.write(b"x") == Error(error)
    assert layer.inner.send_state is SendState.EOF_QUEUED  # the FIN, behind the ClientHello
    assert not layer.step()


def test_an_inner_reset_during_the_handshake_fails_the_outer_flow() -> None:
    layer = TlsLayer(Flow(), server_context(), server_side=True)
    layer.outer.write(b"never sent")
    layer.step()
    reset = ConnectionResetError(104, "Connection reset by peer")
    layer.inner.receive_error(reset)
    assert layer.step()
    assert layer.outer.read() == Error(FlowError(ErrorKind.RESET, reset))
    assert layer.outer.write(b"x") == Error(FlowError(ErrorKind.RESET, reset))
    assert not layer.step()


# -- what a renegotiation asks of the layer --------------------------------------------------------


class _WantsPeerOnce(ssl.SSLObject):
    """An SSLObject whose first write needs the peer's answer first, as a write does while a
    TLS 1.2 renegotiation is under way (Python cannot start one, so it is played here)."""

    blocked = True

    def write(self, data: Any) -> int:
        if _WantsPeerOnce.blocked:
            _WantsPeerOnce.blocked = False
            raise ssl.SSLWantReadError("the handshake needs the peer")
        return super().write(data)


def test_a_write_that_needs_the_peer_waits_for_its_answer() -> None:
    context = client_context()
    context.sslobject_class = _WantsPeerOnce
    pair = link(client=context)
    pair.settle()
    _WantsPeerOnce.blocked = True
    assert not pair.client.send_waits_for_peer
    pair.client.outer.write(b"after the renegotiation")
    assert not pair.client.step()  # nothing moved: the write waits for input
    assert pair.client.outer.queued == 23
    assert pair.client.send_waits_for_peer  # a driver must receive for it
    pair.server.outer.write(b"the peer's answer")
    pair.settle()
    assert not pair.client.send_waits_for_peer
    assert read_all(pair.server.outer) == (b"after the renegotiation", WOULD_WAIT)
    assert read_all(pair.client.outer) == (b"the peer's answer", WOULD_WAIT)


class _FailsOnRead(ssl.SSLObject):
    """An SSLObject whose read fails the way OpenSSL fails without a reason code."""

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        raise ssl.SSLSyscallError(5, "Some I/O error occurred (_ssl.c:2580)")


def test_an_ssl_error_without_a_reason_is_named_by_its_text() -> None:
    context = server_context()
    context.sslobject_class = _FailsOnRead
    pair = link(server=context)
    pair.settle()
    error = _error(pair.server)
    assert error.kind is ErrorKind.TLS
    assert error_message(error) == "TLS failure: Some I/O error occurred"


class _Fails(ssl.SSLObject):
    """An SSLObject whose ``failing`` method raises, as OpenSSL does on a broken session."""

    failing = ""

    def write(self, data: Any) -> int:
        self._maybe_fail("write")
        return super().write(data)

    def unwrap(self) -> None:
        self._maybe_fail("unwrap")
        super().unwrap()

    def _maybe_fail(self, method: str) -> None:
        if _Fails.failing == method:
            raise ssl.SSLError(1, "[SSL: BAD_LENGTH] bad length (_ssl.c:2427)")


@pytest.mark.parametrize("method", ["write", "unwrap"])
def test_a_failed_send_ends_the_session_and_the_peer_sees_a_cut(method: str) -> None:
    context = client_context()
    context.sslobject_class = _Fails
    _Fails.failing = method
    pair = link(client=context)
    pair.settle()
    pair.client.outer.write(b"data")
    pair.client.outer.close()
    pair.settle()
    error = _error(pair.client)
    assert error_message(error) == "TLS failure: bad length"
    assert pair.client.outer.read() == Error(error)
    # No close_notify: the server's read ends in a truncation, not a clean EOF.
    assert read_all(pair.server.outer)[1] == Error(_error(pair.server))
    assert _error(pair.server).kind is ErrorKind.TRUNCATED
    assert pair.client.inner.send_state is SendState.EOF_SENT


# -- error texts -----------------------------------------------------------------------------------


def test_tls_error_kinds_and_their_texts() -> None:
    cause = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    assert error_message(FlowError(ErrorKind.TRUNCATED, cause)) == (
        "the peer closed the connection without TLS close_notify: data may be truncated"
    )  # OpenSSL's error code 8 is not ENOEXEC
    assert error_message(FlowError(ErrorKind.CERTIFICATE, cause, "certificate has expired")) == (
        "TLS certificate verification failed: certificate has expired"
    )
    assert error_message(FlowError(ErrorKind.TLS, cause, "x")) == "TLS failure: x"
    assert repr(ErrorKind.TRUNCATED) == "ErrorKind.TRUNCATED"


def test_tls_info_is_frozen() -> None:
    info = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", None, "localhost", None, False)
    with pytest.raises(AttributeError):
        info.version = "TLSv1.2"  # type: ignore[misc]
    assert repr(info) == (
        "TlsInfo(version='TLSv1.3', cipher='TLS_AES_128_GCM_SHA256', alpn_protocol=None, "
        "server_hostname='localhost', peer_certificate=None, session_reused=False)"
    )


def _error(layer: TlsLayer) -> FlowError:
    error = layer.outer.error
    assert error is not None
    return error


def _cause(layer: TlsLayer) -> BaseException | None:
    return _error(layer).cause
