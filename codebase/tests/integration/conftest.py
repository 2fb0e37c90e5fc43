"""Fixtures of the integration tests (besides tests/conftest.py)."""

from tests.support.workers import start_projector  # noqa: F401  (a fixture: workers in threads)
