"""Health-check probe tests."""
