"""Serving a model that implements ``chat``: ``mmrun serve`` (docs/serving.md).

Modules: :mod:`~mm_core.serve.schemas` (the OpenAI wire format and errors),
:mod:`~mm_core.serve.conversation` (messages -> a ``chat`` call),
:mod:`~mm_core.serve.images` (image URLs within limits), :mod:`~mm_core.serve.queue` (the
bounded queue and generation thread), :mod:`~mm_core.serve.chat_model` (the served model),
:mod:`~mm_core.serve.app` (routes), :mod:`~mm_core.serve.cli` (the command), ``page.html``.
Needs the ``serve`` extra: ``pip install 'mm-core[serve]'``.
"""
