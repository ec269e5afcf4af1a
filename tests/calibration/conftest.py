"""Fixtures shared with the weight-averaging tests."""

from tests.averaging.conftest import no_report  # noqa: F401
