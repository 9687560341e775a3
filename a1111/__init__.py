"""AUTOMATIC1111 / Forge host adapter (used by ``scripts/pal_autofix.py``).

``args`` is host-free (the positional order, the dict form and infotext keys over the option
schema in ``core/options.py``); ``host`` and ``ui`` import the webui's ``modules`` and Gradio, so
they are imported only inside a webui (or against the test stand-in in ``tests/a1111_stub``).
"""
