"""The loop's stages as small units with typed inputs and outputs, and the jobs composing them.

:mod:`~edgeloop.pipeline.stage` is the machinery (a stage, its outcome, running a list of them);
one module per stage (``data``, ``train``, ``export``, ``bench``, ``register``, ``optimize``,
``convert``, ``serve``, ``fleet``); :mod:`~edgeloop.pipeline.quickstart` composes them, and
:mod:`~edgeloop.pipeline.report` writes its report.
"""
