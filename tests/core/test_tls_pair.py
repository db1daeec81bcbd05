"""``TlsLayer`` over ``FlowPair``: two TLS flows joined by the in-memory wire, every ending."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st
from test_tls import (
    CA,
    SERVER_CERT,
    VERSION_NAMES,
    VERSIONS,
    bio_bytes,
    client_context,
    read_all,
    server_context,
    settle,
    state,
)

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
    TlsLayer,
    error_message,
)
from sansflow.testing import CheckedFlow, FlowPair

RECORD = 16 * 1024
RECORD_OVERHEAD = 256  # a TLS record's header, tag and padding take far less than this


@dataclass
class TlsPair:
    """A client and a server layer over the two flows of ``pair``."""

    pair: FlowPair
    client: TlsLayer
    server: TlsLayer

    def run(self, chunk: int | None = None) -> None:
        settle(lambda: self.pair.pump(chunk), self.client, self.server)

    @property
    def flows(self) -> tuple[Flow, Flow, Flow, Flow]:
        return self.client.outer, self.server.outer, self.client.inner, self.server.inner


def tls_pair(version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, *,
             client: ssl.SSLContext | None = None, server: ssl.SSLContext | None = None,
             server_hostname: str = "localhost", capacity: int | None = None,
             client_options: dict[str, Any] | None = None,
             server_options: dict[str, Any] | None = None,
             inner_options: dict[str, Any] | None = None) -> TlsPair:
    pair = FlowPair(Flow(**(inner_options or {})), Flow(**(inner_options or {})),
                    capacity=capacity)
    return TlsPair(
        pair,
        TlsLayer(pair.a, client or client_context(version), server_hostname=server_hostname,
                 **(client_options or {})),
        TlsLayer(pair.b, server or server_context(version), server_side=True,
                 **(server_options or {})),
    )


def truncated(layer: TlsLayer) -> Error:
    error = layer.outer.error
    assert error is not None
    assert error.kind is ErrorKind.TRUNCATED
    assert isinstance(error.cause, ssl.SSLEOFError)
    assert error_message(error) == (
        "the peer closed the connection without TLS close_notify: data may be truncated"
    )
    return Error(error)


def reset_kind(flow: Flow) -> ErrorKind | None:
    return None if flow.error is None else flow.error.kind


# -- data and clean endings ------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_echo(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version)
    payload = bytes(range(256)) * 1000  # several records
    tls.client.outer.write(payload)
    tls.run()
    data, end = read_all(tls.server.outer)
    assert (data, end) == (payload, WOULD_WAIT)
    tls.server.outer.write(data)
    tls.run()
    assert read_all(tls.client.outer) == (payload, WOULD_WAIT)
    assert tls.client.tls is not None
    assert tls.client.tls.version == VERSION_NAMES[version]


@pytest.mark.parametrize("version", VERSIONS)
def test_request_half_close_reply(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version)
    client, server, client_inner, server_inner = tls.flows
    client.write(b"request")
    client.shutdown(Shutdown.WRITE)
    tls.run()
    assert read_all(server) == (b"request", Eof())
    assert (state(client), state(server)) == (FlowState.HALF_CLOSED_LOCAL,
                                              FlowState.HALF_CLOSED_REMOTE)
    # One close_notify is through: no FIN below yet, either way.
    assert (state(client_inner), client_inner.send_state) == (FlowState.OPEN, SendState.OPEN)
    assert server_inner.send_state is SendState.OPEN
    server.write(b"reply")
    tls.run()
    assert read_all(client) == (b"reply", WOULD_WAIT)
    server.close()
    tls.run()
    assert read_all(client) == (b"", Eof())
    for flow in tls.flows:
        assert state(flow) is FlowState.CLOSED
        assert flow.error is None
    assert tls.pair.resets == 0
    assert not tls.client.step()
    assert not tls.server.step()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_server_half_closes_first(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version)
    client, server, client_inner, server_inner = tls.flows
    server.write(b"banner")
    server.shutdown(Shutdown.WRITE)
    tls.run()
    assert read_all(client) == (b"banner", Eof())
    assert state(client) is FlowState.HALF_CLOSED_REMOTE
    client.writev([b"still ", b"talking"])
    tls.run()
    assert read_all(server) == (b"still talking", WOULD_WAIT)
    assert (state(client_inner), state(server_inner)) == (FlowState.OPEN, FlowState.OPEN)
    client.close()
    tls.run()
    assert read_all(server) == (b"", Eof())
    for flow in tls.flows:
        assert state(flow) is FlowState.CLOSED


def test_both_close_at_once() -> None:
    tls = tls_pair()
    tls.run()
    tls.client.outer.close()
    tls.server.outer.close()
    tls.run()
    for flow in tls.flows:
        assert (state(flow), flow.error) == (FlowState.CLOSED, None)


def test_close_before_the_handshake_is_sent_after_it() -> None:
    tls = tls_pair()
    tls.client.outer.write(b"last words")
    tls.client.outer.close()
    tls.server.outer.close()
    tls.run()
    assert read_all(tls.server.outer) == (b"last words", Eof())
    assert read_all(tls.client.outer) == (b"", Eof())
    for flow in tls.flows:
        assert (state(flow), flow.error) == (FlowState.CLOSED, None)


def test_shutdown_read_discards_and_still_sees_close_notify() -> None:
    tls = tls_pair()
    client = tls.client.outer
    client.shutdown(Shutdown.READ)
    tls.server.outer.write(b"x" * 100_000)
    tls.server.outer.close()
    tls.run()
    assert client.read() == Eof()
    assert (client.buffered, client.receive_state) == (0, ReceiveState.EOF_RECEIVED)
    client.close()
    tls.run()
    for flow in tls.flows:
        assert state(flow) is FlowState.CLOSED


def test_bytes_after_the_peers_close_notify_are_dropped_and_its_fin_still_arrives() -> None:
    tls = tls_pair(inner_options={"receive_limit": 1000})
    tls.server.outer.close()
    tls.run()
    assert read_all(tls.client.outer) == (b"", Eof())
    tls.server.inner.write(b"junk after close_notify " * 1000)  # more than the receive limit
    tls.server.inner.shutdown(Shutdown.WRITE)
    tls.client.outer.close()
    tls.run()
    for flow in tls.flows:
        assert (state(flow), flow.error) == (FlowState.CLOSED, None)


def test_starttls_after_a_plaintext_exchange() -> None:
    pair = FlowPair()
    pair.a.write(b"STARTTLS\r\n")
    pair.pump()
    assert read_all(pair.b) == (b"STARTTLS\r\n", WOULD_WAIT)
    pair.b.write(b"220 go ahead\r\n")
    pair.b.write(b"not yet read")  # queued before TLS started: it goes out first, as sent
    pair.pump()
    assert pair.a.read(14) == Ok(b"220 go ahead\r\n")
    pair.a.read()
    tls = TlsPair(pair, TlsLayer(pair.a, client_context(), server_hostname="localhost"),
                  TlsLayer(pair.b, server_context(), server_side=True))
    tls.client.outer.write(b"EHLO secret")
    tls.run()
    assert read_all(tls.server.outer) == (b"EHLO secret", WOULD_WAIT)


# -- writing: records and backpressure -------------------------------------------------------------


def test_small_writes_share_records() -> None:
    tls = tls_pair()
    tls.run()
    client = tls.client.outer
    for index in range(1000):
        client.write(b"%09d\n" % index)
    assert tls.client.step()
    # 10 000 bytes fit in one record; a record per write would add 1000 record overheads.
    assert 10_000 < tls.client.inner.queued < 10_000 + RECORD_OVERHEAD
    tls.run()
    data, _ = read_all(tls.server.outer)
    assert data == b"".join(b"%09d\n" % index for index in range(1000))


def test_a_record_takes_a_bounded_number_of_buffers() -> None:
    tls = tls_pair()
    tls.run()
    for _ in range(300):
        tls.client.outer.write(b"z")
    tls.client.outer.write(b"y" * 20_000)
    tls.run()
    assert read_all(tls.server.outer) == (b"z" * 300 + b"y" * 20_000, WOULD_WAIT)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_huge_write_to_a_peer_that_never_reads_holds_little_ciphertext(
        version: ssl.TLSVersion) -> None:
    tls = tls_pair(version, capacity=64 * 1024)
    tls.run()
    payload = bytes(range(256)) * (40 * 1024)  # 10 MiB
    client = tls.client
    assert client.outer.write(payload) == Ok(None)  # one write is always taken whole
    tls.run()
    # The plaintext waits in the outer queue (the caller's own bytes, not a copy); below it,
    # at most the inner flow's high water and one record of ciphertext.
    assert client.inner.queued + bio_bytes(client) <= client.inner.high_water + RECORD
    assert client.outer.queued > len(payload) - 2 * 1024 * 1024
    # The server holds what its receive limits allow, and no more.
    server = tls.server
    assert server.outer.buffered <= server.outer.receive_limit + RECORD
    assert server.inner.buffered + bio_bytes(server) <= (server.inner.receive_limit
                                                         + 64 * 1024 + RECORD_OVERHEAD)
    # Reading at last lets all of it through, intact, with the same bounds all along.
    received = []
    for _ in range(10_000):  # a few hundred rounds move 10 MiB; more is a livelock
        if not (client.outer.queued or server.outer.buffered):
            break
        data, _ = read_all(server.outer)
        received.append(data)
        tls.pair.pump(RECORD)
        client.step()
        server.step()
        assert client.inner.queued + bio_bytes(client) <= client.inner.high_water + RECORD
        assert server.outer.buffered <= server.outer.receive_limit + RECORD
    assert b"".join(received) == payload


def test_writes_in_pieces_stop_at_the_high_water_mark() -> None:
    tls = tls_pair(capacity=64 * 1024)
    tls.run()
    client = tls.client
    piece = b"p" * (64 * 1024)
    accepted = 0
    while accepted < 10 * 1024 * 1024 and client.outer.write(piece) is not WOULD_WAIT:
        accepted += len(piece)
        tls.run()
    held = client.outer.queued + client.inner.queued + bio_bytes(client)
    assert client.outer.write(piece) is WOULD_WAIT
    # Both flows within their contract: high water plus one write above, plus one record below.
    assert held <= client.outer.high_water + len(piece) + client.inner.high_water + RECORD
    assert accepted < 2 * 1024 * 1024


# -- truncation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_an_eof_without_close_notify_is_a_truncation(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version)
    tls.server.outer.write(b"partial-body")
    tls.run()
    tls.server.inner.shutdown(Shutdown.WRITE)  # a FIN with no close_notify before it
    tls.run()
    error = truncated(tls.client)
    assert read_all(tls.client.outer) == (b"partial-body", error)
    assert tls.client.outer.read() == error  # sticky
    assert tls.client.outer.write(b"x") == error
    # The client's side of the connection ends with a FIN too: no reset.
    assert (state(tls.client.inner), state(tls.server.inner)) == (FlowState.CLOSED,
                                                                  FlowState.CLOSED)
    assert tls.pair.resets == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_a_lenient_layer_reads_eof_without_close_notify(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version, client_options={"require_close_notify": False})
    tls.server.outer.write(b"body framed by the protocol")
    tls.run()
    tls.server.inner.shutdown(Shutdown.WRITE)
    tls.run()
    client = tls.client.outer
    assert read_all(client) == (b"body framed by the protocol", Eof())
    assert client.read() == Eof()
    # The session is over all the same: writing cannot go on.
    assert client.write(b"x") == Error(FlowError(ErrorKind.TRUNCATED, _cause(tls.client)))
    assert state(client) is FlowState.CLOSED


def test_a_lenient_layer_that_already_closed_ends_cleanly() -> None:
    tls = tls_pair(client_options={"require_close_notify": False})
    tls.client.outer.close()
    tls.run()
    tls.server.outer.write(b"response")
    tls.run()
    tls.server.inner.shutdown(Shutdown.WRITE)
    tls.run()
    client = tls.client.outer
    assert read_all(client) == (b"response", Eof())
    assert (state(client), client.error) == (FlowState.CLOSED, None)


@pytest.mark.parametrize("version", VERSIONS)
def test_half_a_record_then_eof_is_a_truncation(version: ssl.TLSVersion) -> None:
    tls = tls_pair(version)
    tls.server.outer.write(b"first")
    tls.run()
    tls.server.outer.write(b"second, cut short")
    tls.server.step()
    server_inner = tls.server.inner
    tls.pair.transmit(server_inner)
    wire = tls.pair.wire_from(server_inner)
    del wire.data[len(wire.data) // 2:]
    server_inner.shutdown(Shutdown.WRITE)
    tls.run()
    assert read_all(tls.client.outer) == (b"first", truncated(tls.client))


def test_a_truncation_after_our_close_notify_is_still_one() -> None:
    tls = tls_pair()
    tls.client.outer.close()
    tls.server.outer.write(b"tail")
    tls.run()
    assert read_all(tls.server.outer) == (b"", Eof())
    tls.server.inner.shutdown(Shutdown.WRITE)
    tls.run()
    client = tls.client.outer
    assert read_all(client) == (b"tail", truncated(tls.client))
    assert client.write(b"x") == Eof()  # our direction had ended cleanly and stays so
    assert state(client) is FlowState.CLOSED


# -- certificates and alerts -----------------------------------------------------------------------

OTHER_CA = trustme.CA()
EXPIRED_CERT = CA.issue_cert("localhost", not_after=datetime.datetime(2000, 1, 1,
                                                                     tzinfo=datetime.timezone.utc))
CLIENT_CERT = CA.issue_cert("client@example.test")


def _requiring_client_cert(version: ssl.TLSVersion) -> ssl.SSLContext:
    context = server_context(version)
    context.verify_mode = ssl.CERT_REQUIRED
    CA.configure_trust(context)
    return context


@dataclass
class Failure:
    name: str
    make: Callable[[ssl.TLSVersion], TlsPair]
    failing: str  # "client" or "server"
    kind: ErrorKind
    message: str  # the failing side's error_message
    peer_message: Callable[[ssl.TLSVersion], str]  # the other side's


FAILURES = [
    Failure("wrong hostname",
            lambda v: tls_pair(v, server_hostname="wrong.test"), "client", ErrorKind.CERTIFICATE,
            "TLS certificate verification failed: Hostname mismatch, certificate is not valid "
            "for 'wrong.test'",
            lambda v: "TLS failure: peer sent alert bad certificate (SSLV3_ALERT_BAD_CERTIFICATE)"),
    Failure("unknown CA",
            lambda v: tls_pair(v, client=client_context(v, OTHER_CA)), "client",
            ErrorKind.CERTIFICATE,
            "TLS certificate verification failed: unable to get local issuer certificate",
            lambda v: "TLS failure: peer sent alert unknown ca (TLSV1_ALERT_UNKNOWN_CA)"),
    Failure("expired",
            lambda v: tls_pair(v, server=server_context(v, EXPIRED_CERT)), "client",
            ErrorKind.CERTIFICATE, "TLS certificate verification failed: certificate has expired",
            lambda v: "TLS failure: peer sent alert certificate expired "
                      "(SSLV3_ALERT_CERTIFICATE_EXPIRED)"),
    Failure("client certificate missing",
            lambda v: tls_pair(v, server=_requiring_client_cert(v)), "server", ErrorKind.TLS,
            "TLS failure: peer did not return a certificate (PEER_DID_NOT_RETURN_A_CERTIFICATE)",
            lambda v: ("TLS failure: peer sent alert certificate required "
                       "(TLSV13_ALERT_CERTIFICATE_REQUIRED)") if v is ssl.TLSVersion.TLSv1_3
            else "TLS failure: peer sent alert handshake failure (SSLV3_ALERT_HANDSHAKE_FAILURE)"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("failure", FAILURES, ids=[f.name for f in FAILURES])
def test_a_failed_verification_reaches_the_peer_as_an_alert(failure: Failure,
                                                            version: ssl.TLSVersion) -> None:
    tls = failure.make(version)
    tls.client.outer.write(b"never delivered")
    tls.run()
    failing, peer = ((tls.client, tls.server) if failure.failing == "client"
                     else (tls.server, tls.client))
    error = failing.outer.error
    assert error is not None
    assert (error.kind, error_message(error)) == (failure.kind, failure.message)
    assert isinstance(error.cause, ssl.SSLError)
    assert failing.outer.read() == Error(error)
    peer_error = peer.outer.error
    assert peer_error is not None
    assert error_message(peer_error) == failure.peer_message(version)
    assert peer_error.kind is ErrorKind.TLS  # the alert, not a reset
    assert peer.outer.read() == Error(peer_error)
    assert tls.pair.resets == 0
    # Both sides shut down below after the alert, so the connection ends cleanly.
    for flow in tls.flows:
        assert state(flow) is FlowState.CLOSED
    assert not tls.client.step()
    assert not tls.server.step()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_alert_for_a_bad_record_waits_behind_the_queued_ciphertext(
        version: ssl.TLSVersion) -> None:
    # The client reads nothing, so the server's ciphertext backs up to its inner queue.
    tls = tls_pair(version, capacity=1000, inner_options={"receive_limit": 4096},
                   client_options={"receive_limit": 1000})
    tls.server.outer.write(b"s" * 200_000)
    tls.run()
    server_inner = tls.server.inner
    assert not server_inner.write_ready
    # A forged application-data record: its authentication fails.
    server_inner.receive_data(b"\x17\x03\x03\x00\x20" + bytes(32))
    tls.run()
    server_error = tls.server.outer.error
    assert server_error is not None
    assert error_message(server_error) in {
        "TLS failure: decryption failed or bad record mac "
        "(DECRYPTION_FAILED_OR_BAD_RECORD_MAC)",
        "TLS failure: bad record mac (BAD_RECORD_MAC)",
    }
    assert server_inner.send_state is SendState.OPEN  # no FIN while the alert waits
    received = []
    for _ in range(1000):
        if tls.client.outer.error is not None:
            break
        data, _ = read_all(tls.client.outer)
        received.append(data)
        tls.run()
    data, end = read_all(tls.client.outer)
    received.append(data)
    assert 0 < len(b"".join(received)) < 200_000
    assert set(b"".join(received)) == {ord("s")}
    client_error = tls.client.outer.error
    assert end == Error(client_error)  # type: ignore[arg-type]
    assert error_message(client_error) == (  # type: ignore[arg-type]
        "TLS failure: peer sent alert bad record mac (SSLV3_ALERT_BAD_RECORD_MAC)"
    )
    tls.run()
    for flow in tls.flows:
        assert state(flow) is FlowState.CLOSED
    assert tls.pair.resets == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_a_client_certificate_is_the_servers_peer_certificate(version: ssl.TLSVersion) -> None:
    client = client_context(version)
    CLIENT_CERT.configure_cert(client)
    tls = tls_pair(version, client=client, server=_requiring_client_cert(version))
    tls.client.outer.write(b"hello")
    tls.run()
    assert read_all(tls.server.outer) == (b"hello", WOULD_WAIT)
    assert tls.server.tls is not None
    assert tls.server.tls.peer_certificate == _der(CLIENT_CERT)


# -- what the handshake settled on -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_info(version: ssl.TLSVersion) -> None:
    seen_names = []
    server = server_context(version)

    def sni_callback(sslobject: Any, name: str | None, context: ssl.SSLContext) -> None:
        seen_names.append(name)

    server.sni_callback = sni_callback
    server.set_alpn_protocols(["http/1.1"])
    client = client_context(version)
    client.set_alpn_protocols(["h2", "http/1.1"])
    tls = tls_pair(version, client=client, server=server)
    assert (tls.client.tls, tls.server.tls) == (None, None)
    tls.run()
    assert seen_names == ["localhost"]
    client_info, server_info = tls.client.tls, tls.server.tls
    assert client_info is not None
    assert server_info is not None
    assert client_info.version == server_info.version == VERSION_NAMES[version]
    assert client_info.cipher == server_info.cipher
    assert client_info.cipher in {cipher["name"] for cipher in server.get_ciphers()}
    assert client_info.alpn_protocol == server_info.alpn_protocol == "http/1.1"
    assert (client_info.server_hostname, server_info.server_hostname) == ("localhost", None)
    assert client_info.peer_certificate == _der(SERVER_CERT)
    assert server_info.peer_certificate is None
    assert (client_info.session_reused, server_info.session_reused) == (False, False)
    assert tls.client.tls is client_info  # settled once


def test_no_alpn_without_both_sides() -> None:
    client = client_context()
    client.set_alpn_protocols(["h2"])
    tls = tls_pair(client=client)
    tls.run()
    assert tls.client.tls is not None
    assert tls.client.tls.alpn_protocol is None


def _der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


# -- aborts and resets -----------------------------------------------------------------------------


def test_abort_resets_the_connection_without_close_notify() -> None:
    tls = tls_pair()
    tls.client.outer.write(b"before the abort")
    tls.run()
    tls.client.outer.abort()
    tls.run()
    assert tls.pair.resets == 1
    assert reset_kind(tls.client.inner) is ErrorKind.ABORTED
    data, end = read_all(tls.server.outer)
    assert data == b"before the abort"
    assert isinstance(end, Error)
    assert end.error.kind is ErrorKind.RESET
    assert not tls.client.step()


def test_abort_during_the_handshake() -> None:
    tls = tls_pair()
    tls.client.step()
    tls.client.outer.abort()
    tls.run()
    assert reset_kind(tls.server.outer) is ErrorKind.RESET
    assert reset_kind(tls.client.outer) is ErrorKind.ABORTED


def test_a_reset_below_keeps_the_plaintext_received_before_it() -> None:
    tls = tls_pair(client_options={"receive_limit": 100})
    payload = b"r" * 50_000
    tls.server.outer.write(payload)
    tls.run()
    client = tls.client.outer
    assert client.reading_paused  # the rest waits as ciphertext, below
    tls.pair.reset()
    tls.run()
    data, end = read_all(client)
    assert data == payload
    assert isinstance(end, Error)
    assert end.error.kind is ErrorKind.RESET
    assert client.write(b"x") == end


def test_a_reset_after_the_peers_close_notify_fails_our_writes() -> None:
    tls = tls_pair()
    tls.server.outer.close()
    tls.run()
    client = tls.client.outer
    assert client.read() == Eof()
    tls.pair.reset()
    tls.run()
    assert client.read() == Eof()  # that direction had ended cleanly
    result = client.write(b"x")
    assert isinstance(result, Error)
    assert result.error.kind is ErrorKind.RESET


# -- any chunking, any sizes -----------------------------------------------------------------------

ENDINGS = ["close_notify", "truncated", "truncated, lenient"]


class Sizes(TypedDict):
    high_water: int
    low_water: int
    receive_limit: int


@st.composite
def flow_sizes(draw: st.DrawFn) -> Sizes:
    high = draw(st.integers(1, 3000))
    return {"high_water": high, "low_water": draw(st.integers(0, high)),
            "receive_limit": draw(st.integers(1, 3000))}


@given(
    version=st.sampled_from(VERSIONS),
    chunk=st.one_of(st.none(), st.integers(1, 1500)),
    capacity=st.one_of(st.none(), st.integers(1, 3000)),
    inner_sizes=flow_sizes(),
    outer_sizes=flow_sizes(),
    max_read=st.one_of(st.none(), st.integers(1, 2000)),
    client_data=st.lists(st.binary(max_size=1500), max_size=4),
    server_data=st.lists(st.binary(max_size=1500), max_size=4),
    ending=st.sampled_from(ENDINGS),
)
def test_chunking_and_sizes_never_change_what_arrives(
        version: ssl.TLSVersion, chunk: int | None, capacity: int | None,
        inner_sizes: Sizes, outer_sizes: Sizes, max_read: int | None,
        client_data: list[bytes], server_data: list[bytes], ending: str) -> None:
    pair = FlowPair(CheckedFlow(**inner_sizes), CheckedFlow(**inner_sizes), capacity=capacity)
    client = TlsLayer(pair.a, client_context(version), server_hostname="localhost",
                      require_close_notify=ending != "truncated, lenient", **outer_sizes)
    server = TlsLayer(pair.b, server_context(version), server_side=True, **outer_sizes)
    to_write = {client: list(client_data), server: list(server_data)}
    received = {client: b"", server: b""}
    ends: dict[TlsLayer, object] = {}
    for _ in range(200_000):
        for layer in (client, server):
            outer = layer.outer
            queue = to_write[layer]
            while queue and outer.write(queue[0]) is not WOULD_WAIT:
                queue.pop(0)
            if not queue and (layer is client or ending == "close_notify"):
                outer.shutdown(Shutdown.WRITE)
            while layer not in ends and (result := outer.read(max_read)) is not WOULD_WAIT:
                if isinstance(result, Ok):
                    received[layer] += result.value
                else:
                    ends[layer] = result
        if (ending != "close_notify" and server in ends and not to_write[server]
                and not server.outer.queued and not bio_bytes(server)
                and server.inner.send_state is SendState.OPEN):
            server.inner.shutdown(Shutdown.WRITE)  # the server's FIN, without close_notify
        for flow in (pair.a, pair.b):
            pair.transmit(flow, chunk)
            pair.deliver(pair.peer(flow), chunk)
        client.step()
        server.step()
        if len(ends) == 2 and state(pair.a) is state(pair.b) is FlowState.CLOSED:
            break
    assert received == {client: b"".join(server_data), server: b"".join(client_data)}
    assert ends[server] == Eof()
    if ending == "close_notify":
        assert ends[client] == Eof()
        for flow in (client.outer, server.outer, pair.a, pair.b):
            assert (state(flow), flow.error) == (FlowState.CLOSED, None)
    elif ending == "truncated":
        assert ends[client] == truncated(client)
    else:
        assert ends[client] == Eof()
        assert (state(client.outer), client.outer.error) == (FlowState.CLOSED, None)
    assert (state(pair.a), state(pair.b)) == (FlowState.CLOSED, FlowState.CLOSED)
    assert pair.resets == 0


def _cause(layer: TlsLayer) -> BaseException | None:
    assert layer.outer.error is not None
    return layer.outer.error.cause
