"""TLS on the blocking-socket adapter: what each side sees when the other ends well, and when
it ends without close_notify.

Run it as ``python examples/tls_blocking.py``. The certificates come from trustme, a test CA
(``pip install trustme``); give real ones to a real server.
"""

import socket
import ssl
import threading

import trustme

from sansflow import Eof, Error, ErrorKind, Shutdown, error_message
from sansflow.adapters import socket as sf

ca = trustme.CA()
server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_tls)
client_tls = ssl.create_default_context()
ca.configure_trust(client_tls)


def upper_after_eof(flow: sf.SocketFlow) -> None:
    request = b"".join(flow)  # every byte, until the client's close_notify
    flow.write(request.upper())  # the server may still write: the flow is half-closed


with sf.serve(upper_after_eof, "127.0.0.1", 0, ssl=server_tls) as server, \
        sf.connect("127.0.0.1", server.port, ssl=client_tls, server_hostname="localhost") as flow:
    assert flow.tls is not None
    print(flow.tls.version, "with", flow.tls.server_hostname)
    flow.write(b"hello over tls")
    flow.shutdown(Shutdown.WRITE)  # close_notify; reading goes on
    print(b"".join(flow).decode())  # HELLO OVER TLS, then the server's close_notify
    assert flow.read() == Eof()


# A peer that closes the TCP connection without close_notify (the standard library's SSLSocket
# does so on close()): the data before the cut is delivered, then the read says that the end
# cannot be trusted. Over plain TCP, or with asyncio's own TLS, it would look like a clean end.
def send_then_cut(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with server_tls.wrap_socket(connection, server_side=True) as tls_socket:
        tls_socket.sendall(b"the first half of a reply")


with socket.create_server(("127.0.0.1", 0)) as listener:
    peer = threading.Thread(target=send_then_cut, args=(listener,))
    peer.start()
    with sf.connect("127.0.0.1", listener.getsockname()[1], ssl=client_tls,
                    server_hostname="localhost") as flow:
        print(flow.read())  # Ok(value=b'the first half of a reply')
        result = flow.read()
        assert isinstance(result, Error)
        assert result.error.kind is ErrorKind.TRUNCATED
        print(error_message(result.error))
    peer.join()
