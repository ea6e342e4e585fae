"""The Python face of edgeloop: the quickstart pipeline now, the ``EdgeMLManager`` facade later."""
