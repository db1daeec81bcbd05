"""Two sansflow cores joined by hand: the loop every adapter runs, with no I/O at all."""

from sansflow import WOULD_WAIT, Eof, Flow, FlowState, Ok

client, server = Flow(), Flow()

assert client.write(b"hello, ") == Ok(None)
assert client.writev([b"sans", bytearray(b"flow")]) == Ok(None)  # the bytearray is copied
client.close()  # flush what is queued, then send EOF
assert client.write(b"too late") == Eof()

# The transport's half of the work: take out what to send, feed it to the other side.
for buffer in client.buffers_to_send():
    server.receive_data(buffer)
client.sent(client.queued)  # a real transport reports how many bytes it took
if client.eof_due:
    client.eof_sent()
    server.receive_eof()

assert server.read(5) == Ok(b"hello")
assert server.read() == Ok(b", sansflow")
assert server.read() == Eof()  # and Eof again on every later read
assert server.state is FlowState.HALF_CLOSED_REMOTE  # the server may still write
assert client.read() is WOULD_WAIT  # an adapter would wait here for data or EOF
print(client.state.name, server.state.name)
