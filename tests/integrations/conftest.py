"""A failed test that used LiteLLM proxies reports their last log lines.

A proxy answers its client with a one-line summary ("Connection error", say). What it saw is in its own log, a
file in the test's temporary folder that is gone by the time anyone reads a CI report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from integrations.litellm_process import LiteLLMProxy


def _proxies(value: object) -> list[LiteLLMProxy]:
    """The proxies a fixture value is or holds (a dataclass's fields, one level deep)."""
    if isinstance(value, LiteLLMProxy):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [field for field in vars(value).values() if isinstance(field, LiteLLMProxy)]
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        for proxy in _proxies(value):
            report.sections.append((f"LiteLLM proxy {proxy.name}: {proxy.log_path}", proxy.log_tail()))
