"""Shared test settings: hypothesis profiles (``HYPOTHESIS_PROFILE=thorough`` for long runs),
error log records as test failures, and a test CA with TLS contexts for the TLS tests."""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Generator, Iterator

import pytest
import trustme
from hypothesis import settings

pytest_plugins = ["pytester"]

# ``ci`` keeps the whole suite quick and still reaches every state; ``thorough`` is for runs
# that may take minutes. Neither has a deadline: a slow machine is not a bug.
settings.register_profile(
    "ci", max_examples=80, stateful_step_count=50, deadline=None, print_blob=True
)
settings.register_profile(
    "thorough", max_examples=5000, stateful_step_count=100, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- error log records fail the test ---------------------------------------------------------
# What an adapter cannot return as a value (a handler that raised, a flush that failed on a
# background thread) goes to the "sansflow" logger, and asyncio and trio log what broke in a
# callback or a task nobody awaited. Such a record means something went wrong even when every
# assertion holds, so a test fails on any record at ERROR or above on these loggers (or their
# children) unless it declares it with ``@pytest.mark.expect_log(logger, text)``; a declared
# record must then appear, with ``text`` in its message. The records are taken by a handler on
# the loggers themselves, so that those emitted on other threads or in event-loop callbacks,
# which pytest's log capture may show but never asserts on, count as well.
WATCHED_LOGGERS = ("asyncio", "trio", "sansflow")
_FORMAT = logging.Formatter("%(name)s %(levelname)s [%(threadName)s]: %(message)s")


class _ErrorLogWatch(logging.Handler):
    """Keeps the records at ERROR or above, from any thread, and checks them against what the
    test declares."""

    def __init__(self, expected: list[tuple[str, str]]) -> None:
        super().__init__(logging.ERROR)
        self.expected = expected
        self.records: list[logging.LogRecord] = []
        self.records_lock = threading.Lock()  # records come from any thread
        self.checked = 0  # records before this index were checked or dismissed

    def emit(self, record: logging.LogRecord) -> None:
        with self.records_lock:
            self.records.append(record)

    def check(self, *, expectations: bool) -> None:
        """Fails the test on any record not checked yet that no declaration covers and, with
        ``expectations``, on any declaration that no record meets."""
        with self.records_lock:
            records = list(self.records)
        new, self.checked = records[self.checked:], len(records)
        unexpected = [r for r in new if not any(_meets(r, *e) for e in self.expected)]
        missing = [e for e in self.expected if not any(_meets(r, *e) for r in records)]
        problems = []
        if unexpected:
            problems.append("error log records the test does not declare with "
                            "@pytest.mark.expect_log(logger, text):")
            problems += [_indent(_FORMAT.format(r)) for r in unexpected]
        if expectations and missing:
            problems.append("declared error log records that never appeared:")
            problems += [f"  expect_log({name!r}, {text!r})" for name, text in missing]
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)

    def dismiss(self) -> None:
        """Takes the records so far as checked: the test failed already, and pytest's report
        shows them with its captured log."""
        with self.records_lock:
            self.checked = len(self.records)


def _meets(record: logging.LogRecord, name: str, text: str) -> bool:
    in_logger = record.name == name or record.name.startswith(name + ".")
    return in_logger and text in record.getMessage()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


_WATCH = pytest.StashKey[_ErrorLogWatch]()


@pytest.fixture(autouse=True)
def _error_logs_fail_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    expected = []
    for mark in request.node.iter_markers("expect_log"):
        if len(mark.args) != 2 or not all(isinstance(a, str) for a in mark.args) or mark.kwargs:
            raise TypeError(f"expect_log takes (logger name, message text), got {mark}")
        expected.append((mark.args[0], mark.args[1]))
    watch = _ErrorLogWatch(expected)
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(watch)
        if logger.getEffectiveLevel() > logging.ERROR:
            logger.setLevel(logging.ERROR)
    request.node.stash[_WATCH] = watch
    try:
        yield
    finally:
        del request.node.stash[_WATCH]
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(watch)
            logger.setLevel(level)
    watch.check(expectations=False)  # what the other fixtures' teardowns logged


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Checks the records when the test's own code ends, so that it fails rather than errs."""
    watch = item.stash.get(_WATCH, None)
    try:
        yield
    except BaseException:
        if watch is not None:
            watch.dismiss()
        raise
    if watch is not None:
        watch.check(expectations=True)


# -- TLS: a test CA (trustme) and contexts made from it, for the tests that run TLS --------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    """A certificate for ``localhost`` and the loopback address."""
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_ctx(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` (and nothing else): given the CA, the default
    context skips loading the system's CAs, which would cost more than many of the tests."""
    return ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
