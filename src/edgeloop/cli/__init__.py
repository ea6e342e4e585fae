"""The ``edgeloop`` command line: one module per command group."""
