"""The search service: `carsearch serve` (JSON API under /api/v1, web page at /). See app.py."""

from carsearch.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
