"""``mmrun serve``: load a model once and serve it over HTTP (OpenAI chat API + a web page).

    mmrun serve --config run.yaml [--checkpoint CKPT] [--host 127.0.0.1] [--port 8000]

Binds to 127.0.0.1 unless told otherwise. ``--port 0`` takes a free port; the line
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

log = logging.getLogger("mm_serve")

MIB = 2**20


def build_parser() -> argparse.ArgumentParser:
    """The options of ``mmrun serve``."""
    parser = argparse.ArgumentParser(
        prog="mmrun serve", description="Serve a model that implements chat: OpenAI-compatible API and a web chat page.")
    parser.add_argument("--config", "--cfg-path", dest="config", required=True, help="the config with the model block")
    parser.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--checkpoint", help="weights to load (.safetensors/.pth file or mm checkpoint directory)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port; default 8000)")
    parser.add_argument("--model-name", help="the name clients send as 'model' (default ARCH-MODEL_TYPE)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--max-queue", type=int, default=16,
                        help="requests that may wait behind the running one; more get 429 (default 16)")
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
    from mm_serve.chat_model import ChatModel
    from mm_serve.images import ImageLimits

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = ServerSettings(
        max_body_bytes=int(args.max_body_mb * MIB),
        images=ImageLimits(int(args.max_image_mb * MIB), args.max_image_pixels, args.max_images,
                           tuple(_image_root(r) for r in args.image_root)),
        max_waiting=args.max_queue,
        max_new_tokens=args.max_tokens,
        default_max_new_tokens=min(args.default_max_tokens, args.max_tokens),
    )
    sock = _bind(args.host, args.port)  # before loading: a taken port fails fast
    loaded = load_config(args.config, args.options)
    chat_model = ChatModel.from_config(loaded, args.checkpoint, args.model_name, args.device)
    app = create_app(chat_model, settings)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"mmrun serve: {chat_model.name} on http://{shown}:{port}", flush=True)
    if not _is_loopback(host):
        log.warning("listening on %s: reachable from other machines, with no authentication", host)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


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
