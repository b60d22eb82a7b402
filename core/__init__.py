"""The shared kernel every part imports: the event and violation models, settings, metrics, masking and
redaction. It imports nothing of ingest, processors, store or api; what composes them all is the
`citywatch` package (command line, roles, embedded runtime)."""

__version__ = "0.1.0"
