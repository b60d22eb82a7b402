"""The HTTP API: app factory, dependencies, one module per resource under routes/."""
