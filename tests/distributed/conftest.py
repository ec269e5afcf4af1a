"""In-process runs of the distributed tests skip the report, as their subprocesses do (hook/)."""

import sys

import pytest

from tests.distributed.launching import NO_REPORT


@pytest.fixture(autouse=True)
def no_report(monkeypatch):
    monkeypatch.setitem(sys.modules, "trainlab.report.html", NO_REPORT)
