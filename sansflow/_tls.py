"""``TlsLayer``: TLS between two cores, with the stdlib's sans-IO ``ssl.SSLObject``.

The layer is the application of the flow below (``inner``, ciphertext) and the transport of the
flow above (``outer``, plaintext), so the outer flow keeps the whole contract: states, water
marks, sticky results, data before errors. Two rules keep it honest:

1. Plaintext is encrypted only when the inner flow takes more, as its own writer would write:
   once it is at or under its low-water mark, records up to its high-water mark (at least
   one), made in one call and handed over in one write, which the adapter sends in one system
   call. The outgoing ``MemoryBIO`` (which has no bound of its own) stays
   empty between steps and backpressure holds end to end.
2. The first ``ssl.SSLError`` ends the TLS session for good: the ``SSLObject`` is never called
   again (it would only answer a meaningless ``SSLSyscallError``), its alert is flushed to the
   peer, and the outer flow fails with the error classified once, by ``_flow_error``.
"""

from __future__ import annotations

import contextlib
import re
import ssl
from dataclasses import dataclass

from ._errors import ErrorKind, FlowError
from ._flow import HIGH_WATER, LOW_WATER, RECEIVE_LIMIT, Buffer, Flow
from ._results import Eof, Ok
from ._state import ReceiveState, SendState, Shutdown

__all__ = ["TlsInfo", "TlsLayer"]

_RECORD = 16 * 1024
"""The most plaintext one TLS record carries: the unit of encryption and of decryption."""
_GATHER = 1024
"""Queued buffers looked at per encryption, so that many small writes fill whole records."""
# Absent from ssl builds on OpenSSL older than 3.0, which cannot set it either.
_IGNORE_UNEXPECTED_EOF: int = getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
_RECEIVE_OPEN = ReceiveState.OPEN
_SEND_EOF_QUEUED = SendState.EOF_QUEUED


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What the handshake settled on."""

    version: str
    """The protocol version, such as ``"TLSv1.3"``."""
    cipher: str
    """The cipher suite's name, such as ``"TLS_AES_256_GCM_SHA384"``."""
    alpn_protocol: str | None
    """The protocol chosen by ALPN, or ``None`` if the peers did not negotiate one."""
    server_hostname: str | None
    """The name the client asked for (and checked the certificate against). ``None`` on the
    server side: the server's context sees the name in its ``sni_callback``."""
    peer_certificate: bytes | None
    """The peer's certificate (DER), or ``None`` if it sent none (a client, usually)."""
    session_reused: bool
    """The handshake resumed an earlier session."""


class TlsLayer:
    """TLS between two cores: ``inner`` carries ciphertext (the layer uses its application
    side: ``inner.read()``/``write()``/``shutdown()``/``abort()``), ``outer`` carries plaintext
    (the layer drives its transport side, as an adapter drives a core).

    Nothing moves by itself: ``step()`` does everything that can be done now, both ways, and
    whoever drives the inner flow calls it after each event on either flow. It never does I/O.

    - The handshake runs first; writes meanwhile stay queued in ``outer`` and reads wait.
    - ``outer``'s EOF (``close()``, ``shutdown(WRITE)``) sends close_notify once its queue is
      encrypted; reading goes on. The inner flow is shut down (FIN) once both close_notifys
      went through, or when the TLS session ended otherwise.
    - The peer's close_notify is ``outer``'s EOF, after the plaintext before it; ``outer`` may
      keep writing.
    - The inner flow's EOF without close_notify fails ``outer`` with ``TRUNCATED``, after the
      plaintext before it; with ``require_close_notify=False``, reads answer ``Eof()`` instead
      (writes still fail: the session cannot go on).
    - A TLS failure (certificate, alert, bad record) fails ``outer`` with ``CERTIFICATE`` or
      ``TLS``, after the alert is flushed to the peer; an inner failure (a reset) fails
      ``outer`` with that error; ``outer.abort()`` aborts the inner flow (no close_notify).
    - The peer's refusal of our certificate (missing, untrusted) is its alert: ``TLS``, the
      detail naming it (``peer sent alert certificate required
      (TLSV13_ALERT_CERTIFICATE_REQUIRED)``). A TLS 1.3 client's handshake is done before
      the server checks its certificate, so the client learns it from its next read; a TLS
      1.2 client, from its handshake.
    - What the peer starts after the handshake (a TLS 1.2 renegotiation, a TLS 1.3 key
      update) runs inside ``step()``, its answers sent like records. While a renegotiation
      is under way the queued plaintext waits for the peer's messages
      (``send_waits_for_peer``): they must be received even if nobody reads.
    """

    __slots__ = (
        "_broken",
        "_done",
        "_handshake_done",
        "_incoming",
        "_info",
        "_inner",
        "_need_input",
        "_outer",
        "_outer_ended",
        "_outgoing",
        "_peer_closed",
        "_require_close_notify",
        "_send_waits",
        "_ssl",
        "_unwrapped",
    )

    def __init__(self, inner: Flow, ssl_context: ssl.SSLContext, *, server_side: bool = False,
                 server_hostname: str | None = None, require_close_notify: bool = True,
                 high_water: int = HIGH_WATER, low_water: int = LOW_WATER,
                 receive_limit: int = RECEIVE_LIMIT) -> None:
        _check_arguments(inner, ssl_context, server_side, server_hostname, require_close_notify)
        outer = Flow(high_water=high_water, low_water=low_water, receive_limit=receive_limit)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = ssl_context.wrap_bio(incoming, outgoing, server_side=server_side,
                                         server_hostname=server_hostname)
        self._inner = inner
        self._outer = outer
        self._incoming = incoming
        self._outgoing = outgoing
        self._require_close_notify = require_close_notify
        self._info: TlsInfo | None = None
        self._handshake_done = False
        self._need_input = False  # the SSLObject asked for ciphertext that inner had not given
        self._send_waits = False  # the last write needs the peer's answer (a renegotiation)
        self._broken = False  # an SSLError ended the session: the SSLObject is never called again
        self._unwrapped = False  # our close_notify is out
        self._peer_closed = False  # the peer's close_notify arrived
        self._outer_ended = False  # the layer itself ended outer (an error, or a ragged EOF)
        self._done = False  # inner was shut down, aborted or failed: nothing more to do

    @property
    def inner(self) -> Flow:
        """The flow below, which carries ciphertext."""
        return self._inner

    @property
    def outer(self) -> Flow:
        """The plaintext flow the application uses."""
        return self._outer

    @property
    def handshake_done(self) -> bool:
        """The handshake completed (``tls`` says how)."""
        return self._handshake_done

    @property
    def send_waits_for_peer(self) -> bool:
        """Queued plaintext waits for the peer's handshake messages (a TLS 1.2 renegotiation
        is under way): nothing more is sent until they are received. A driver that receives
        only for a reader must then receive for the writer too, or a flow that only writes
        would never send again."""
        return self._send_waits and not self._broken

    @property
    def tls(self) -> TlsInfo | None:
        """What the handshake settled on; ``None`` until it completed."""
        return self._info

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The session's ``ssl.SSLObject``, for inspection: ``getpeercert()``,
        ``get_channel_binding()``, ``shared_ciphers()``. Never for ``read``, ``write``,
        ``do_handshake`` or ``unwrap``: they would move the session behind the layer's back,
        and the layer's state would no longer match it."""
        return self._ssl

    def __repr__(self) -> str:
        side = "server" if self._ssl.server_side else "client"
        phase = "established" if self._handshake_done else "handshaking"
        if self._broken:
            phase = "failed"
        return f"<TlsLayer {side} {phase} outer={self._outer!r} inner={self._inner!r}>"

    def step(self) -> bool:
        """Move everything that can move now, both ways; ``True`` if anything changed.

        Cheap when nothing is due, so it may be called after every event on either flow;
        a driver repeats "move bytes below, then ``step()``" until neither moves anything.
        """
        changed = False
        while not self._done and self._step_once():
            changed = True
        return changed

    # -- one pass ------------------------------------------------------------------------

    # A pass runs after every event on either flow, mostly to find nothing to do, so it reads
    # the two flows' fields itself (it is part of the core) instead of through their
    # properties: a third of the calls of a TLS round trip went to them.

    def _step_once(self) -> bool:
        outer, inner = self._outer, self._inner
        if outer._failure is not None and not self._outer_ended:
            # The application aborted: the peer sees a reset, never a close_notify, so that
            # it cannot take a cut stream for a complete one.
            inner.abort(outer._failure.error)
            self._done = True
            return True
        moved = self._receive()
        if self._handshake_done and not self._broken:
            moved = self._send() or moved
        moved = self._flush() or moved
        if inner._failure is not None and not self._outer_ended:
            # The flow below failed (a reset): _receive took the plaintext that arrived first.
            self._end_outer(inner._failure.error)
            self._done = True
            return True
        session_over = self._broken or (self._unwrapped and self._peer_closed)
        if session_over and not self._outgoing.pending:
            inner.shutdown(Shutdown.WRITE)  # after our close_notify or alert: the FIN
            self._done = True
            return True
        return moved

    def _receive(self) -> bool:
        """Run the handshake, then decrypt while the outer flow takes plaintext (past its
        limit only once the inner flow failed, so that nothing received before is lost)."""
        moved = False
        sslobj = self._ssl
        outer, inner = self._outer, self._inner
        while not (self._peer_closed or self._broken):
            if self._need_input:
                if not self._feed():
                    break
                moved = True  # the inner flow's buffer shrank, even if no record is complete
            if outer._buffered >= outer._receive_limit and inner._failure is None:
                break  # outer.reading_paused
            try:
                if not self._handshake_done:
                    sslobj.do_handshake()
                    self._handshake_done = True
                    self._info = _tls_info(sslobj)
                    moved = True
                    continue
                data = sslobj.read(_RECORD)
            except ssl.SSLWantReadError:
                self._need_input = True
                continue
            except ssl.SSLZeroReturnError as exc:
                if not self._handshake_done:  # a close_notify instead of an answer
                    self._fail(exc)
                    return True
                data = b""  # the peer's close_notify, once ours went out too
            except ssl.SSLError as exc:
                self._fail(exc)
                return True
            moved = True
            if data:
                self._outer.receive_data(data)
            else:
                self._peer_closed = True
                self._outer.receive_eof()  # after the plaintext already received
                self._inner.shutdown(Shutdown.READ)  # nothing valid can follow close_notify
        return moved

    def _feed(self) -> bool:
        """Hand what the inner flow received to the ``SSLObject``; ``False`` if nothing came."""
        inner = self._inner
        if not inner._buffered and inner._receive_state is _RECEIVE_OPEN:
            return False  # what inner.read() answers WOULD_WAIT to
        result = inner.read()
        if isinstance(result, Ok):
            self._incoming.write(result.value)
        elif isinstance(result, Eof):
            self._incoming.write_eof()  # the SSLObject tells a close_notify from a cut
        else:
            return False  # the inner flow failed: _step_once ends outer with its error
        self._need_input = False
        return True

    def _send(self) -> bool:
        """Encrypt queued plaintext while the inner flow takes it (``_room``); then our
        close_notify once the outer flow's EOF is due."""
        outer, inner = self._outer, self._inner
        moved = False
        self._send_waits = False
        try:
            while outer._queued and inner.write_ready:
                outer.sent(self._ssl.write(self._plaintext(self._room())))
                self._flush()
                moved = True
            if outer._send_state is _SEND_EOF_QUEUED and outer.eof_due and not self._unwrapped:
                self._unwrapped = True
                self._send_close_notify()
                outer.eof_sent()
                moved = True
        except ssl.SSLWantReadError:
            self._send_waits = True  # a renegotiation under way needs the peer's answer first
        except ssl.SSLError as exc:
            self._fail(exc)
            return True
        return moved

    def _send_close_notify(self) -> None:
        """``unwrap()`` once: it queues our close_notify and returns only if the peer's is
        already in; it is never called again to wait for it (reads go on meanwhile)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self._ssl.unwrap()

    def _room(self) -> int:
        """How much plaintext to encrypt for the inner flow, which takes more (``write_ready``):
        whole records up to its high-water mark, less what it holds, at least one (its marks may
        be smaller than a record). The ciphertext passes the mark by the records' overhead
        only, far less than the one record more that the flow's contract allows."""
        inner = self._inner
        return max(_RECORD, (inner.high_water - inner.queued) // _RECORD * _RECORD)

    def _plaintext(self, size: int) -> Buffer:
        """At most ``size`` bytes from the front of the outer queue, small writes joined."""
        buffers = self._outer.buffers_to_send(_GATHER)
        first = buffers[0]
        if len(first) >= size or len(buffers) == 1:
            return memoryview(first)[:size]
        total = count = 0
        for buffer in buffers:
            total += len(buffer)
            count += 1
            if total >= size:
                break
        return memoryview(b"".join(buffers[:count]))[:size]

    def _flush(self) -> bool:
        """Move the outgoing ciphertext into the inner flow, if it takes more now."""
        outgoing = self._outgoing
        if not outgoing.pending or not self._inner.write_ready:
            return False
        # write_ready: accepted whole, or refused because the inner send direction ended, in
        # which case nothing can reach the peer any more.
        self._inner.write(outgoing.read())
        return True

    # -- endings -------------------------------------------------------------------------

    def _fail(self, exc: ssl.SSLError) -> None:
        """The TLS session ended with ``exc``: never call the SSLObject again; the alert it
        queued goes out before the inner flow's FIN (not a reset, so the peer sees it)."""
        self._broken = True
        error = _flow_error(exc, handshaking=not self._handshake_done)
        if error.kind is ErrorKind.TRUNCATED and not self._require_close_notify:
            self._outer.receive_eof()  # reads end cleanly; writes still fail below
        self._end_outer(error)
        self._inner.shutdown(Shutdown.READ)

    def _end_outer(self, error: FlowError) -> None:
        self._outer_ended = True
        self._outer.receive_error(error)


def _check_arguments(inner: object, ssl_context: object, server_side: object,
                     server_hostname: object, require_close_notify: object) -> None:
    """Raise for a bad argument, before anything is built or changed."""
    if not isinstance(inner, Flow):
        raise TypeError(f"inner must be a sansflow.Flow, not {type(inner).__name__}")
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            f"ssl_context must be an ssl.SSLContext, not {type(ssl_context).__name__}"
        )
    for name, value in (("server_side", server_side),
                        ("require_close_notify", require_close_notify)):
        if type(value) is not bool:
            raise TypeError(f"{name} must be a bool, not {type(value).__name__} ({value!r})")
    if server_hostname is not None and not isinstance(server_hostname, str):
        raise TypeError(
            f"server_hostname must be a str or None, not {type(server_hostname).__name__}"
        )
    if server_side and server_hostname is not None:
        raise ValueError(
            f"server_hostname ({server_hostname!r}) is the name a client asks for; "
            "a server sees it in its context's sni_callback"
        )
    side = "server" if server_side else "client"
    if ssl_context.protocol is (ssl.PROTOCOL_TLS_CLIENT if server_side else
                                ssl.PROTOCOL_TLS_SERVER):
        raise ValueError(
            f"ssl_context was made with ssl.{ssl_context.protocol.name}, which cannot be a "
            f"{side}; pass server_side={not server_side} or a context made for the {side} side"
        )
    # ssl checks this for SSLSocket but not for SSLObject, whose handshake would then accept a
    # trusted certificate for any name.
    if not server_side and ssl_context.check_hostname and server_hostname is None:
        raise ValueError(
            "ssl_context checks the server's name (check_hostname) but server_hostname is None; "
            "pass the name to check"
        )
    if require_close_notify and ssl_context.options & _IGNORE_UNEXPECTED_EOF:
        raise ValueError(
            "ssl_context has ssl.OP_IGNORE_UNEXPECTED_EOF, which hides truncation (even of a "
            "record cut in half); pass require_close_notify=False to accept an EOF without "
            "close_notify, or use a context without that option"
        )
    if inner.send_state is not SendState.OPEN or inner.receive_state is not ReceiveState.OPEN:
        raise ValueError(f"inner must be open both ways to start TLS, not {inner!r}")


def _tls_info(sslobj: ssl.SSLObject) -> TlsInfo:
    version, cipher = sslobj.version(), sslobj.cipher()
    assert version is not None  # the handshake is done
    assert cipher is not None
    return TlsInfo(
        version=version,
        cipher=cipher[0],
        alpn_protocol=sslobj.selected_alpn_protocol(),
        server_hostname=sslobj.server_hostname,
        peer_certificate=sslobj.getpeercert(binary_form=True),
        session_reused=sslobj.session_reused,
    )


# OpenSSL's text, without its "[SSL: REASON] " prefix and " (_ssl.c:1006)" suffix.
_OPENSSL_DECORATION = re.compile(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def _flow_error(exc: ssl.SSLError, *, handshaking: bool) -> FlowError:
    """The one place an ``ssl.SSLError`` becomes a ``FlowError`` (with ``exc`` as its cause)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FlowError(ErrorKind.CERTIFICATE, exc, exc.verify_message.rstrip("."))
    if handshaking and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # Not a truncation (no data came yet) but a handshake that never finished.
        return FlowError(ErrorKind.TLS, exc, "the peer closed the connection during the "
                                             "handshake")
    if isinstance(exc, ssl.SSLEOFError):
        return FlowError(ErrorKind.TRUNCATED, exc)
    # OpenSSL sets reason (None at times); an SSLError made in Python has none at all.
    reason = getattr(exc, "reason", None) or ""
    _, alert, name = reason.partition("_ALERT_")
    if alert:
        return FlowError(ErrorKind.TLS, exc,
                         f"peer sent alert {name.lower().replace('_', ' ')} ({reason})")
    text = _OPENSSL_DECORATION.sub("", str(exc.strerror or exc))
    return FlowError(ErrorKind.TLS, exc, f"{text} ({reason})" if reason else text)
