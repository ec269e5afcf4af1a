"""Fixtures of the weight-averaging and calibration tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def no_report(monkeypatch):
    """Runs without report.html, whose figures cost most of a tiny run's time and carry no weights."""
    import trainlab.report.html

    monkeypatch.setattr(trainlab.report.html, "write_report", lambda *args, **kwargs: None)
