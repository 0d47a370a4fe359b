"""mm-plugin-serve: ``mmrun serve`` (OpenAI-compatible API and a web chat page) and ``mmrun chat``
(a terminal conversation) for any model that implements ``chat`` (docs/serving.md).

Modules: :mod:`~mm_serve.schemas` (the OpenAI wire format and errors),
:mod:`~mm_serve.conversation` (messages -> a ``chat`` call), :mod:`~mm_serve.images` (image URLs
within limits), :mod:`~mm_serve.queue` (the bounded queue and generation thread),
:mod:`~mm_serve.chat_model` (the served model), :mod:`~mm_serve.app` (routes),
:mod:`~mm_serve.cli` (``mmrun serve``), :mod:`~mm_serve.chat_cli` (``mmrun chat``), ``page.html``;
:mod:`~mm_serve.predict` (``mmrun predict``, offline batch inference).

This package imports nothing heavy: ``mmrun --help`` lists its commands through :mod:`~mm_serve.hooks`.
"""

__version__ = "0.1.0"
