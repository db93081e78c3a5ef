"""One module per CLI command, each exposing ``register(app)`` (listed in ``rolltrace.cli``)."""
