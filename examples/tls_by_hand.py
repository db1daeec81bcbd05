"""Two ``TlsLayer``s joined by hand, with no I/O at all: what an adapter does to carry TLS.

Each layer sits between a ciphertext flow below (``inner``, which the transport feeds) and a
plaintext flow above (``outer``, which the application uses). Nothing moves by itself: after
anything happens on either flow, the driver calls ``step()``, which does all that can be done
now and says whether anything moved. Run it as ``python examples/tls_by_hand.py`` (the
certificates come from trustme, a test CA: ``pip install trustme``).
"""

import ssl

import trustme

from sansflow import Eof, Flow, Ok, Shutdown, TlsLayer

ca = trustme.CA()
server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ca.issue_cert("localhost").configure_cert(server_tls)
client_tls = ssl.create_default_context()
ca.configure_trust(client_tls)

client = TlsLayer(Flow(), client_tls, server_hostname="localhost")
server = TlsLayer(Flow(), server_tls, server_side=True)


def carry(sender: Flow, receiver: Flow) -> None:
    """The transport's half of the work, for the ciphertext flows below the layers."""
    for buffer in sender.buffers_to_send():
        receiver.receive_data(bytes(buffer))
    sender.sent(sender.queued)
    if sender.eof_due:
        sender.eof_sent()
        receiver.receive_eof()


def settle() -> None:
    """Carry ciphertext both ways and step both layers until neither has anything to do."""
    while True:
        carry(client.inner, server.inner)
        carry(server.inner, client.inner)
        moved = [client.step(), server.step()]  # both step, even when the first one moved
        if not any(moved):
            return


assert client.outer.write(b"hello") == Ok(None)  # queued until the handshake is done
client.outer.shutdown(Shutdown.WRITE)  # close_notify, once "hello" is encrypted
settle()
assert client.tls is not None
print(client.tls.version, client.tls.cipher)

assert server.outer.read() == Ok(b"hello")
assert server.outer.read() == Eof()  # the client's close_notify: a clean end
server.outer.write(b"a reply after the client's EOF")
server.outer.close()
settle()

assert client.outer.read() == Ok(b"a reply after the client's EOF")
assert client.outer.read() == Eof()
print("both close_notifys went through; inner flows:", client.inner.state.name,
      server.inner.state.name)
