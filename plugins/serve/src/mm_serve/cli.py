"""``mmrun serve``: load a model once and serve it over HTTP (OpenAI chat API + a web page).

    mmrun serve --config run.yaml [--checkpoint CKPT] [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Binds to 127.0.0.1 unless told otherwise; another address needs an API key (``--api-key`` or
``MM_API_KEYS``) or ``--insecure-no-auth``. ``--port 0`` takes a free port; the line
``mmrun serve: <model> on http://HOST:PORT`` on stdout says where it listens.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from mm_core.config.loader import load_config
from mm_core.errors import ConfigError, MMError
from mm_serve.chat_model import add_model_options

log = logging.getLogger("mm_serve")

MIB = 2**20


def build_parser() -> argparse.ArgumentParser:
    """The options of ``mmrun serve``."""
    parser = argparse.ArgumentParser(
        prog="mmrun serve", description="Serve a model that implements chat: OpenAI-compatible API and a web chat page.")
    add_model_options(parser, "the config with the model block")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port; default 8000)")
    parser.add_argument("--model-name", help="the name clients send as 'model' (default ARCH-MODEL_TYPE)")
    parser.add_argument("--max-queue", type=int, default=128,
                        help="requests that may wait behind the running batch; more get 429 (default 128)")
    parser.add_argument("--max-batch-size", type=int, default=16,
                        help="requests generated together in one call, for models with chat_batch (default 16; 1: off)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long a batch waits for more requests before it starts (default 10)")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on /v1/* (repeatable; also MM_API_KEYS: "
                             "a key file or comma-separated keys)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="allow a non-loopback --host without API keys (anyone who reaches it can use it)")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default 20)")
    parser.add_argument("--max-image-mb", type=float, default=10.0, help="largest image, encoded (default 10)")
    parser.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image, in pixels")
    parser.add_argument("--max-images", type=int, default=4, help="images per request (default 4)")
    parser.add_argument("--image-root", action="append", default=[], metavar="DIR",
                        help="allow image_url paths inside DIR (repeatable; default: data URLs only)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="the most max_tokens a request may ask for")
    parser.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens when a request names none")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str]) -> int:
    """Run ``mmrun serve``: bind, load the model once, serve until interrupted."""
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from mm_serve.app import ServerSettings, create_app
    except ImportError as exc:
        raise MMError(f"mmrun serve needs {exc.name or 'its web stack'}, which is not installed",
                      hint="pip install mm-plugin-serve") from exc
    from mm_serve.auth import load_api_keys
    from mm_serve.chat_model import ChatModel
    from mm_serve.images import ImageLimits

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    _check_batching(args)
    api_keys = load_api_keys(args.api_key)
    check_exposure(args.host, bool(api_keys), args.insecure_no_auth)
    settings = ServerSettings(
        max_body_bytes=int(args.max_body_mb * MIB),
        images=ImageLimits(int(args.max_image_mb * MIB), args.max_image_pixels, args.max_images,
                           tuple(_image_root(r) for r in args.image_root)),
        max_waiting=args.max_queue,
        max_new_tokens=args.max_tokens,
        default_max_new_tokens=min(args.default_max_tokens, args.max_tokens),
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
        api_keys=api_keys,
    )
    sock = _bind(args.host, args.port)  # before loading: a taken port fails fast
    loaded = load_config(args.config, args.options)
    chat_model = ChatModel.from_config(loaded, args.checkpoint, args.model_name, args.device)
    app = create_app(chat_model, settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"mmrun serve: {chat_model.name} on http://{shown}:{port}", flush=True)
    if not _is_loopback(host):
        log.warning("listening on %s: reachable from other machines, %s", host,
                    f"{len(api_keys)} API key(s) required on /v1/*" if api_keys else "with NO authentication")
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def check_exposure(host: str, has_keys: bool, insecure_no_auth: bool) -> None:
    """Refuse to listen beyond this machine without API keys, unless explicitly told to."""
    if not has_keys and not insecure_no_auth and not _is_loopback(host):
        raise ConfigError(
            f"--host {host} makes the server reachable from other machines, and no API key is set",
            hint="give --api-key KEY (or MM_API_KEYS=KEYFILE), or --insecure-no-auth to serve without "
                 "authentication, or keep the default --host 127.0.0.1")


def _check_batching(args: argparse.Namespace) -> None:
    if args.max_batch_size < 1:
        raise ConfigError(f"--max-batch-size {args.max_batch_size}: must be at least 1 (1 turns batching off)")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms {args.batch_wait_ms}: must be 0 or more")
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue {args.max_queue}: must be 0 or more")


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}",
                          hint="choose another --port (0 picks a free one) or --host") from exc
    sock.set_inheritable(True)
    return sock


def _image_root(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--image-root {path}: not a directory")
    return root.resolve()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
