"""citywatch: the command line, the roles and the embedded runtime, which compose ingest, processors,
store and api over the shared kernel in `core`."""

from core import __version__

__all__ = ["__version__"]
