"""The 0.2 home of training, evaluation, metrics and reports; each old module now names its new one.

See docs/architecture.md: ``mxa.train`` (config, loop, state, experiment), ``mxa.metrics``,
``mxa.decision``, ``mxa.files``, ``mxa.losses``, ``mxa.data.spec``/``combine`` and ``mxa.evaluate``.
"""
