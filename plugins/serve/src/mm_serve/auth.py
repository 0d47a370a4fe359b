"""API keys: every ``/v1/*`` request must carry ``Authorization: Bearer KEY`` with a configured key.

Keys come from ``--api-key KEY`` (repeatable) and the ``MM_API_KEYS`` environment variable: the
path of a file (one key per line, or comma-separated; blank lines and ``#`` comments skipped) or
the keys themselves, comma-separated. A presented key is compared with every configured key in
constant time (:func:`hmac.compare_digest`), so the response time tells nothing about how much
of a key was right. Refusals are 401 with OpenAI's error body (the ``openai`` client raises
``AuthenticationError``). The page (``/``) and ``/health`` stay open: the page asks for the key.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from starlette.responses import JSONResponse

from mm_core.errors import ConfigError
from mm_serve.schemas import APIError

ENV_VAR = "MM_API_KEYS"
PROTECTED_PREFIX = "/v1/"


def load_api_keys(given: Iterable[str], env: str | None = None) -> tuple[str, ...]:
    """The keys of ``--api-key`` options plus those of ``MM_API_KEYS`` (``env``: its value)."""
    keys = [k.strip() for k in given]
    env = os.environ.get(ENV_VAR) if env is None else env
    if env and env.strip():
        path = Path(env.strip()).expanduser()
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{ENV_VAR}: cannot read the key file {path}: {exc}") from exc
            lines = [line.split("#", 1)[0] for line in text.splitlines()]
            keys += [k.strip() for line in lines for k in line.split(",")]
        elif env.strip().startswith(("/", "~", "./", "../")):
            raise ConfigError(f"{ENV_VAR}={env!r} looks like a path but there is no such file",
                              hint="give the path of an existing key file, or the keys themselves, comma-separated")
        else:
            keys += [k.strip() for k in env.split(",")]
    keys = [k for k in keys if k]
    for key in keys:
        if any(c.isspace() for c in key) or not key.isprintable():
            raise ConfigError("an API key contains whitespace or unprintable characters",
                              hint="use keys of printable characters without spaces (e.g. `openssl rand -hex 24`)")
    return tuple(dict.fromkeys(keys))


def key_matches(presented: str, keys: tuple[str, ...]) -> bool:
    """Whether ``presented`` is one of ``keys``; every key is compared, each in constant time."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if there is one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class APIKeyMiddleware:
    """ASGI middleware refusing ``/v1/*`` requests without a valid key (a plain ASGI wrapper, so
    streamed responses and disconnect detection pass through untouched)."""

    def __init__(self, app: Any, keys: tuple[str, ...]):
        if not keys:
            raise ValueError("APIKeyMiddleware needs at least one key")
        self.app = app
        self.keys = keys

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIX):
            token = bearer_token(scope.get("headers", []))
            if token is None or not key_matches(token, self.keys):
                error = APIError(401, _refusal(token), code="invalid_api_key", type="invalid_request_error")
                response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refusal(token: str | None) -> str:
    if token is None:
        return ("You didn't provide an API key. This server needs one in an Authorization header: "
                "'Authorization: Bearer KEY' (the openai client's api_key)")
    return "Incorrect API key provided. Ask the server's operator for a valid key."
