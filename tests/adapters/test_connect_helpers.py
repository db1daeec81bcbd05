"""The checks and the failed-connect exceptions that every adapter's connect and serve share."""

from __future__ import annotations

import errno
import re
import socket
from pathlib import Path

import pytest

from sansflow.adapters._connect import (
    check_address,
    check_path,
    connect_failed,
    connect_timed_out,
    remove_socket_file,
    remove_stale_socket_file,
    socket_file_inode,
    where,
)

REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def test_where_brackets_ipv6_hosts() -> None:
    assert where("127.0.0.1", 80) == "127.0.0.1:80"
    assert where("::1", 80) == "[::1]:80"


def test_every_address_refused_is_connection_refused_naming_the_address() -> None:
    failed = connect_failed("localhost:1", [REFUSED, REFUSED])
    assert type(failed) is ConnectionRefusedError
    assert failed.errno == errno.ECONNREFUSED
    assert str(failed) == "[Errno 111] connection refused by localhost:1 (all 2 addresses)"
    assert failed.__cause__ is REFUSED
    assert str(connect_failed("h:1", [REFUSED])) == "[Errno 111] connection refused by h:1"


def test_an_unresolved_name_stays_a_gaierror() -> None:
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    failed = connect_failed("nowhere.invalid:1", [unknown])
    assert type(failed) is socket.gaierror
    assert failed.errno == socket.EAI_NONAME
    assert "Name or service not known: nowhere.invalid:1" in str(failed)


def test_another_error_wins_over_refusals_and_keeps_its_class() -> None:
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    failed = connect_failed("h:1", [REFUSED, unreachable])
    assert failed.errno == errno.ENETUNREACH
    assert str(failed) == "[Errno 101] Network is unreachable: h:1"
    assert failed.__cause__ is unreachable
    reset = connect_failed("h:1", [ConnectionResetError(errno.ECONNRESET, "reset")])
    assert type(reset) is ConnectionResetError
    plain = connect_failed("h:1", [OSError("odd")])
    assert type(plain) is OSError
    assert str(plain) == "odd: h:1"
    with pytest.raises(ValueError, match="needs the errors"):
        connect_failed("h:1", [])


def test_timed_out() -> None:
    failed = connect_timed_out("[::1]:80", 2.5)
    assert type(failed) is TimeoutError
    assert str(failed) == "[Errno 110] connect to [::1]:80 timed out after 2.5 s"


@pytest.mark.parametrize(("host", "port", "server", "error", "message"), [
    (b"localhost", 80, False, TypeError, "host must be a str, not b'localhost'"),
    (None, 80, False, TypeError, "host must be a str, not None"),
    (1, 80, True, TypeError, "host must be a str or None, not 1"),
    ("h", "80", False, TypeError, "port must be an int, not '80'"),
    ("h", True, False, TypeError, "port must be an int, not True"),
    ("h", 80.0, False, TypeError, "port must be an int, not 80.0"),
    ("h", -1, False, ValueError, "port must be from 0 to 65535, not -1"),
    ("h", 65536, False, ValueError, "port must be from 0 to 65535, not 65536"),
])
def test_check_address_refuses(host: object, port: object, server: bool,
                               error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        check_address(host, port, server=server)


def test_check_address_and_path_accept() -> None:
    check_address("::1", 0)
    check_address("h", 65535)
    check_address(None, 80, server=True)
    for path in ("/tmp/x.sock", b"/tmp/x.sock", Path("/tmp/x.sock")):
        check_path(path)
    with pytest.raises(TypeError, match=r"path must be a str, bytes or os\.PathLike, not 3"):
        check_path(3)


def test_socket_files_of_unix_servers(tmp_path: Path) -> None:
    path = tmp_path / "server.sock"
    data = tmp_path / "data"
    data.write_bytes(b"keep me")
    remove_stale_socket_file(data)  # a file of data is never removed
    assert data.exists()
    remove_stale_socket_file(tmp_path / "absent")  # nothing there: nothing to do
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        inode = socket_file_inode(path)
        assert inode == path.stat().st_ino
        remove_socket_file(path, inode + 1)  # another file took its place: left alone
        assert path.exists()
        remove_socket_file(path, inode)
        assert not path.exists()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
    remove_stale_socket_file(path)  # left by a server that is gone
    assert not path.exists()
    abstract = b"\0sansflow-test-abstract"
    assert socket_file_inode(abstract) is None
    remove_stale_socket_file(abstract)
    remove_socket_file(abstract, None)
