"""How ``TlsLayer`` hands ciphertext to the flow below: in few large writes, never past it.

A driver sends what the inner flow holds in one system call, so the number of writes the layer
makes is the number of sends: records encrypted one at a time cost a send each.
"""

from __future__ import annotations

import pytest
from test_tls import read_all
from test_tls_pair import RECORD, RECORD_OVERHEAD, tls_pair

from sansflow import WOULD_WAIT, Ok


@pytest.mark.parametrize("plaintext", [64 * 1024, 10 * 1024 * 1024])
def test_the_layer_fills_the_flow_below_up_to_high_water_in_one_write(plaintext: int) -> None:
    tls = tls_pair()
    tls.run()
    client = tls.client
    assert client.outer.write(b"b" * plaintext) == Ok(None)
    client.step()
    inner = client.inner
    records = inner.high_water // RECORD
    assert len(inner.buffers_to_send()) == 1  # one write: one send
    assert records * RECORD < inner.queued < records * (RECORD + RECORD_OVERHEAD)
    assert client.outer.queued == plaintext - records * RECORD


def test_the_layer_encrypts_again_once_the_flow_below_is_down_to_low_water() -> None:
    tls = tls_pair()
    tls.run()
    client = tls.client
    inner = client.inner
    assert client.outer.write(b"b" * 1024 * 1024) == Ok(None)
    client.step()
    held = inner.queued
    inner.sent(held - inner.low_water - 1)  # one byte above low water: no more records
    assert not client.step()
    assert inner.queued == inner.low_water + 1
    inner.sent(1)  # at low water: records up to high water, again in one write
    client.step()
    records = (inner.high_water - inner.low_water) // RECORD
    assert len(inner.buffers_to_send()) == 2
    assert records * RECORD < inner.queued - inner.low_water < records * (RECORD + RECORD_OVERHEAD)


def test_small_writes_are_joined_into_one_write_of_full_records() -> None:
    tls = tls_pair()
    tls.run()
    client = tls.client
    for _ in range(600):
        assert client.outer.write(b"s" * 100) == Ok(None)
    client.step()
    assert client.outer.queued == 0
    assert len(client.inner.buffers_to_send()) == 1
    assert 60_000 < client.inner.queued < 60_000 + 4 * RECORD_OVERHEAD
    tls.run()
    assert read_all(tls.server.outer) == (b"s" * 60_000, WOULD_WAIT)


def test_small_writes_past_high_water_fill_it_exactly() -> None:
    tls = tls_pair()
    tls.run()
    client = tls.client
    assert client.outer.writev([b"w" * 100] * 1000) == Ok(None)
    client.step()
    assert client.outer.queued == 100_000 - client.inner.high_water
    assert len(client.inner.buffers_to_send()) == 1
    tls.run()
    assert read_all(tls.server.outer) == (b"w" * 100_000, WOULD_WAIT)
