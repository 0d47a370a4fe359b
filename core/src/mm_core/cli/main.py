"""``mmrun``: run a config, or a sub-command registered through ``register_commands`` (the
built-in ones too). User errors exit with code 2 and a message; ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from mm_core.errors import MMError


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mmrun``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        return _dispatch(args)
    except MMError as exc:
        if debug:
            traceback.print_exc()
        print(f"mmrun: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrun: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: list[str]) -> int:
    if args and not args[0].startswith("-"):
        command = _find_command(args[0])
        if command is None:
            from mm_core.errors import did_you_mean

            known = list(_commands())
            raise MMError(f"unknown command '{args[0]}'{did_you_mean(args[0], known)}",
                          hint="`mmrun --help` lists the commands")
        return int(command(args[1:]) or 0)
    if not args or args[0] in ("-h", "--help"):
        print(_help_text())
        return 0
    if args[0] == "--version":
        from mm_core import __version__

        print(f"mmrun (mm-core) {__version__}")
        return 0
    from mm_core.cli.run import run_main

    return run_main(args)


def _commands() -> dict[str, str]:
    """Command name -> its help line."""
    from mm_core.registry import get_registry

    return {e.name: e.registration.help or e.description for e in get_registry().entries("commands")}


def _find_command(name: str) -> Callable[[list[str]], int] | None:
    from mm_core.registry import get_registry

    registry = get_registry()
    return registry.resolve("commands", name) if ("commands", name) in registry else None


def _help_text() -> str:
    lines = [
        "usage: mmrun --config RUN.yaml [--options KEY=VALUE ...] [--dry-run] [--debug]",
        "       mmrun COMMAND [ARGS]   (mmrun COMMAND --help for its options)",
        "",
        "Train and evaluate vision-language models from YAML configs; models, datasets,",
        "tasks and runners come from plugins (entry-point group 'mm.plugins').",
        "",
        "commands:",
    ]
    commands = _commands()
    width = max(len(name) for name in commands) + 2
    for name, help_text in sorted(commands.items()):
        lines.append(f"  {name:<{width}}{help_text}")
    lines += [
        "",
        "options of a run:",
        "  --config PATH      the run config (model / datasets / run blocks, LAVIS layout)",
        "  --options K=V ...  override config keys (e.g. run.max_epoch=1 model.model_type=tiny)",
        "  --dry-run          resolve and validate everything, print the plan, build nothing heavy",
        "  --debug            show tracebacks of user errors",
        "",
        "environment: MM_DISABLE_PLUGIN_AUTOLOAD=1, MM_PLUGINS=a,b, MM_PLUGIN_MODULES=pkg.hooks, MM_CACHE_ROOT",
    ]
    return "\n".join(lines)


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser for a sub-command, named ``mmrun <prog>``."""
    return argparse.ArgumentParser(prog=f"mmrun {prog}", description=description)


if __name__ == "__main__":
    raise SystemExit(main())
