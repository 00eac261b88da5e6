"""Health checks run on directord's event loop (see the health-check issue)."""
