"""The Python face of edgeloop: the control-plane client and the local fleet now, the
``EdgeMLManager`` facade later. The loop's stages and the quickstart are in ``edgeloop.pipeline``.
"""
