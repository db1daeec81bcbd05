"""TLS for the TLS variants: a test CA made at run time with trustme, TLS 1.3 at both ends.

Every stack in a run takes its contexts from here, so both ends of every connection, whatever
the stack, negotiate the same version and cipher suite (``negotiated`` says which). trustme is
a test dependency of sansflow: the TLS variants need it, the plain run does not.
"""

from __future__ import annotations

import functools
import ssl
import threading
from typing import Any

__all__ = ["SERVER_NAME", "Contexts", "client_options", "contexts", "negotiated",
           "server_options"]

SERVER_NAME = "localhost"
"""The name on the server's certificate, which every client checks."""

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]
"""(client, server)."""


_made = threading.Lock()


def contexts() -> Contexts:
    """The client's and the server's context, made once per process."""
    # A blocking run's server and client threads ask at once: both must get the same CA.
    with _made:
        return _make()


@functools.cache
def _make() -> Contexts:
    import trustme  # the TLS variants need it; ImportError says so

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SERVER_NAME).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    for context in (client, server):
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_3
    return client, server


def client_options(tls: bool) -> dict[str, Any]:
    """What a client's ``connect`` (``create_connection``, ``open_connection``) adds for TLS."""
    return {"ssl": contexts()[0], "server_hostname": SERVER_NAME} if tls else {}


def server_options(tls: bool) -> dict[str, Any]:
    """What a ``serve`` (``create_server``, ``start_server``) adds for TLS."""
    return {"ssl": contexts()[1]} if tls else {}


def negotiated() -> str:
    """The version and cipher suite these contexts settle on, from a handshake in memory."""
    client_context, server_context = contexts()
    ends = []
    for context, server_side in ((client_context, False), (server_context, True)):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context.wrap_bio(incoming, outgoing, server_side=server_side,
                               server_hostname=None if server_side else SERVER_NAME)
        ends.append((obj, incoming, outgoing))
    done = [False, False]
    while not all(done):
        for i, (obj, _incoming, outgoing) in enumerate(ends):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            ends[1 - i][1].write(outgoing.read())
    client, server = ends[0][0], ends[1][0]
    cipher = client.cipher()
    if cipher is None or cipher != server.cipher() or client.version() != server.version():
        raise AssertionError(f"the two ends disagree: {cipher} / {server.cipher()}")
    return f"{client.version()} {cipher[0]}"
