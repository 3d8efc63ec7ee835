"""The HTTP API server."""
