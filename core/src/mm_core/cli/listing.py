"""``mmrun list``, ``mmrun plugins`` and ``mmrun info``: what is installed (no torch imported)."""

from __future__ import annotations

from mm_core.cli.main import command_parser
from mm_core.errors import MMError, UnknownNameError
from mm_core.registry import KINDS, get_registry


def list_main(argv: list[str]) -> int:
    parser = command_parser("list", "List registered names, optionally of one kind and matching a pattern.")
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(KINDS)}")
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'blip2*'")
    parser.add_argument("-v", "--verbose", action="store_true", help="show targets, plugins and descriptions")
    args = parser.parse_args(argv)
    registry = get_registry()
    kinds, pattern = _kinds_and_pattern(args.kind, args.pattern)
    for kind in kinds:
        entries = registry.entries(kind, pattern)
        if len(kinds) > 1 and not entries:
            continue
        print(f"{kind}:")
        for entry in entries:
            print("  " + _describe_entry(registry, entry, args.verbose))
        if not entries:
            print("  (none)")
    for (kind, name), claimants in registry.conflicts().items():
        who = ", ".join(e.plugin.label for e in claimants)
        print(f"warning: {kind} '{name}' is registered by several plugins ({who}); using it is an error")
    for info in registry.host.failed():
        print(f"warning: plugin '{info.label}' failed to load: {info.error}")
    return 0


def _kinds_and_pattern(kind: str | None, pattern: str) -> tuple[list[str], str]:
    if kind is None:
        return list(KINDS), pattern
    if kind in KINDS:
        return [kind], pattern
    singular = {k.rstrip("s"): k for k in KINDS}
    if kind in singular:
        return [singular[kind]], pattern
    if any(ch in kind for ch in "*?[") or pattern == "*":
        return list(KINDS), kind  # `mmrun list 'blip2*'`: a pattern over every kind
    raise UnknownNameError(f"unknown kind '{kind}'", hint="kinds: " + ", ".join(KINDS))


def _describe_entry(registry, entry, verbose: bool) -> str:
    text = entry.name
    if entry.kind == "models":
        types = list(registry.model_types(entry.name))
        text += f"  [{', '.join(types)}]" if types else ""
    elif entry.kind == "datasets" and entry.registration.data_type:
        text += f"  ({entry.registration.data_type})"
    if verbose:
        text += f"\n      target: {entry.target}\n      plugin: {entry.plugin.label}"
        if entry.description:
            text += f"\n      {entry.description}"
    return text


def plugins_main(argv: list[str]) -> int:
    parser = command_parser("plugins", "Show installed plugins: distribution, version, names per kind, status.")
    parser.add_argument("-v", "--verbose", action="store_true", help="also API version, hooks and every name")
    args = parser.parse_args(argv)
    registry = get_registry()
    for info in registry.host.infos.values():
        status = "ok" if info.ok else info.status
        print(f"{info.name}  {info.dist or '-'} {info.version or ''}  [{status}]")
        if not info.ok:
            print(f"    error: {info.error}")
            continue
        provided = {k: [e.name for e in registry.entries(k) if e.plugin.name == info.name] for k in KINDS}
        for kind, names in provided.items():
            if names:
                shown = ", ".join(names) if args.verbose or len(names) <= 6 else ", ".join(names[:6]) + ", ..."
                print(f"    {kind}: {shown}")
        if args.verbose:
            print(f"    module: {info.module}")
            print(f"    api version: {info.api_version}")
            print(f"    hooks: {', '.join(info.hooks)}")
    return 0


def info_main(argv: list[str]) -> int:
    parser = command_parser("info", "Show what mm knows about a name: card, types, provider.")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    registry = get_registry()
    found = [kind for kind in KINDS if (kind, args.name) in registry]
    if not found:
        all_names = {n for kind in KINDS for n in registry.names(kind)}
        from mm_core.errors import did_you_mean

        raise MMError(f"no plugin registers '{args.name}'{did_you_mean(args.name, all_names)}",
                      hint="`mmrun list` shows every name")
    for kind in found:
        entry = registry.get(kind, args.name)
        print(f"{args.name} ({kind[:-1] if kind.endswith('s') else kind}) from {entry.plugin.label}: {entry.target}")
        if kind == "models":
            print(f"  model types: {', '.join(registry.model_types(args.name)) or '(none)'}")
        if kind == "datasets":
            print(f"  data type: {entry.registration.data_type or 'images'}; config types: "
                  f"{', '.join(registry.dataset_types(args.name)) or '(none)'}")
        for label, keys in (("run keys", entry.registration.run_keys), ("options", entry.registration.config_keys)):
            if keys:
                print(f"  {label}: " + ", ".join(f"{k} ({v})" for k, v in keys.items()))
        if entry.description:
            print(f"  {entry.description}")
        card = registry.card(kind, args.name)
        print(f"\n{card.rstrip()}" if card else f"  (no card: {entry.package} may ship configs/{kind}/{args.name}/card.md)")
    return 0
