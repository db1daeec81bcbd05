"""The suite's rule that an ERROR log record fails the test (tests/conftest.py), checked on a
suite of its own run in a subprocess with the same conftest and settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SUITE = '''
import asyncio
import logging
import threading

import pytest

log = logging.getLogger("sansflow")


def test_undeclared_error_fails():
    log.error("handler failed")


def test_undeclared_error_on_a_child_logger_fails():
    logging.getLogger("sansflow.adapters").error("flush failed")


def test_undeclared_critical_on_trio_fails():
    logging.getLogger("trio").critical("trio gave up")


def test_error_from_another_thread_fails():
    thread = threading.Thread(target=log.error, args=("from a thread",))
    thread.start()
    thread.join()


def test_error_in_an_asyncio_callback_fails():
    async def main():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0)

    asyncio.run(main())


@pytest.fixture
def logs_at_teardown():
    yield
    log.error("logged at teardown")


def test_error_in_a_fixture_teardown_fails(logs_at_teardown):
    pass


@pytest.mark.expect_log("sansflow", "handler failed")
def test_declared_error_passes():
    log.error("handler failed: %s", "boom")


@pytest.mark.expect_log("sansflow", "handler failed")
def test_declared_error_that_never_comes_fails():
    log.warning("handler failed, but only a warning")


@pytest.mark.expect_log("sansflow", "handler failed")
def test_undeclared_error_beside_a_declared_one_fails():
    log.error("handler failed")
    log.error("flush failed")


def test_warnings_and_other_loggers_pass():
    log.warning("only a warning")
    logging.getLogger("elsewhere").error("not a watched logger")


def test_a_test_that_fails_anyway_is_not_reported_twice():
    log.error("logged before the assertion")
    assert False, "the test's own failure"
'''


def sections(output: str) -> dict[str, str]:
    """Each failure or error section of pytest's report by the test's name, without the log
    that pytest captured."""
    parts = re.split(r"^_{3,} (?:ERROR at teardown of )?(test_\w+) _{3,}$", output, flags=re.M)
    return {name: re.split(r"^-+ Captured", text, flags=re.M)[0]
            for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def test_error_records_fail_the_tests_that_do_not_declare_them(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text())
    pytester.makepyprojecttoml((ROOT / "pyproject.toml").read_text())
    pytester.makepyfile(test_logs=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_logs.py")

    result.assert_outcomes(passed=3, failed=8, errors=1)
    report = sections(result.stdout.str())
    undeclared = "error log records the test does not declare"
    expected_in_report = {
        "test_undeclared_error_fails": [undeclared, "sansflow ERROR [MainThread]: handler failed"],
        "test_undeclared_error_on_a_child_logger_fails": ["sansflow.adapters ERROR",
                                                          "flush failed"],
        "test_undeclared_critical_on_trio_fails": ["trio CRITICAL", "trio gave up"],
        "test_error_from_another_thread_fails": ["sansflow ERROR [Thread-", "from a thread"],
        "test_error_in_an_asyncio_callback_fails": ["asyncio ERROR", "Exception in callback",
                                                    "ZeroDivisionError"],
        "test_error_in_a_fixture_teardown_fails": [undeclared, "logged at teardown"],
        "test_declared_error_that_never_comes_fails": [
            "declared error log records that never appeared",
            "expect_log('sansflow', 'handler failed')"],
        "test_undeclared_error_beside_a_declared_one_fails": [undeclared, "flush failed"],
        "test_a_test_that_fails_anyway_is_not_reported_twice": ["the test's own failure"],
    }
    assert sorted(report) == sorted(expected_in_report)
    for name, texts in expected_in_report.items():
        for text in texts:
            assert text in report[name], (name, text)
    assert "handler failed" not in report["test_undeclared_error_beside_a_declared_one_fails"]
    assert undeclared not in report["test_a_test_that_fails_anyway_is_not_reported_twice"]
