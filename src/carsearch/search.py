"""The public Python API: `from carsearch.search import CarSearch` (the README's example). The code
lives in `carsearch.index.search`; this module only re-exports it."""

from carsearch.index.search import CarSearch, search

__all__ = ["CarSearch", "search"]
