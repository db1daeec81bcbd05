"""A server that cannot listen raises at once, the same on every adapter, and leaves nothing
listening or bound behind."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest

from sansflow.adapters import asyncio as sf_asyncio
from sansflow.adapters import socket as sf_socket
from sansflow.adapters import trio as sf_trio


async def _handler(flow: Any) -> None:
    pass


def _serve(adapter: str, make: str, *args: Any) -> None:
    """Enter and leave the server of ``adapter`` made by its ``make`` function."""
    if adapter == "socket":
        with getattr(sf_socket, make)(lambda flow: None, *args):
            pass
        return
    module = sf_trio if adapter == "trio" else sf_asyncio

    async def main() -> None:
        async with getattr(module, make)(_handler, *args):
            pass

    anyio.run(main, backend="trio" if adapter == "trio" else "asyncio")


ADAPTERS = ["asyncio", "trio", "socket"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_serve_on_a_port_in_use_raises_address_in_use(adapter: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=r"(?i)address already in use") as raised:
            _serve(adapter, "serve", "127.0.0.1", port)
        assert raised.value.errno == errno.EADDRINUSE
    # Nothing of the failed server stayed bound: the port can be listened on again.
    with socket.create_server(("127.0.0.1", port)):
        pass


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_serve_unix_in_a_missing_directory_raises(adapter: str, tmp_path: Path) -> None:
    path = tmp_path / "missing" / "server.sock"
    with pytest.raises(FileNotFoundError):
        _serve(adapter, "serve_unix", str(path))
    assert not path.parent.exists()
