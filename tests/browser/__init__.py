"""Helpers for the tests that drive a real browser (``tests/test_browser*.py``)."""
