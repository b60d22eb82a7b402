"""citywatch: shared kernel (event and violation models, settings, clock) and the command line."""

__version__ = "0.1.0"
