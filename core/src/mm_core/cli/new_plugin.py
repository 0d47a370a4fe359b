"""``mmrun new-plugin NAME``: scaffold a complete, pip-installable third-party plugin (hooks, model,
processor, dataset builder, task, YAMLs, tests, README), or the ``--kinds`` subset (docs/plugins.md)."""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from mm_core import __version__
from mm_core.cli.main import command_parser
from mm_core.errors import MMError

KINDS = ("model", "processor", "dataset", "task", "llm")
DEFAULT_KINDS = KINDS[:4]  # the classifier example; `llm` is asked for by name
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

#: template file -> (kind that needs it or None for always, destination path template)
FILES: dict[str, tuple[str | None, str]] = {
    "pyproject.toml.tmpl": (None, "pyproject.toml"),
    "README.md.tmpl": (None, "README.md"),
    "src/pkg/__init__.py.tmpl": (None, "src/$package/__init__.py"),
    "src/pkg/model.py.tmpl": ("model", "src/$package/model.py"),
    "src/pkg/configs/models/model/tiny.yaml.tmpl": ("model", "src/$package/configs/models/${name}_classifier/tiny.yaml"),
    "src/pkg/configs/models/model/card.md.tmpl": ("model", "src/$package/configs/models/${name}_classifier/card.md"),
    "src/pkg/processors.py.tmpl": ("processor", "src/$package/processors.py"),
    "src/pkg/data.py.tmpl": ("dataset", "src/$package/data.py"),
    "src/pkg/configs/datasets/data/default.yaml.tmpl": ("dataset", "src/$package/configs/datasets/${name}_sample/default.yaml"),
    "src/pkg/configs/datasets/data/card.md.tmpl": ("dataset", "src/$package/configs/datasets/${name}_sample/card.md"),
    "src/pkg/task.py.tmpl": ("task", "src/$package/task.py"),
    "src/pkg/llm.py.tmpl": ("llm", "src/$package/llm.py"),
    "src/pkg/configs/llms/llm/card.md.tmpl": ("llm", "src/$package/configs/llms/${name}_llm/card.md"),
}
#: kind -> the name it registers (the hook and the tests are ``parts/{hooks,tests}_<kind>.py.tmpl``)
NAMES = {"model": "${name}_classifier", "processor": "${name}_features", "dataset": "${name}_sample",
         "task": "${name}_classification", "llm": "${name}_llm"}


def validate_name(name: str) -> str:
    """A plugin name usable as ``mm-plugin-NAME`` and ``import mm_NAME``."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name) or name.startswith("mm"):
        raise MMError(f"invalid plugin name '{name}'",
                      hint="use 2-41 lowercase letters, digits and underscores, starting with a letter and not with "
                      "'mm' (the package becomes mm_NAME, the distribution mm-plugin-NAME)")
    return name


def parse_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise MMError(f"--kinds: unknown kind(s) {', '.join(unknown) or '(none)'}", hint=f"choose from {', '.join(KINDS)}")
    return kinds


def scaffold(name: str, directory: Path, kinds: list[str]) -> list[Path]:
    """Write the plugin project into ``directory`` (which must not exist); returns the files."""
    validate_name(name)
    if directory.exists():
        raise MMError(f"{directory} already exists; new-plugin never overwrites", hint="choose another --dir")
    values = {"name": name, "package": f"mm_{name}", "dist": f"mm-plugin-{name.replace('_', '-')}",
              "core_version": __version__,
              "extra_deps": ', "transformers>=4.44", "tokenizers>=0.19"' if "llm" in kinds else ""}
    values["names"] = ", ".join(Template(NAMES[k]).substitute(values) for k in kinds)
    written = []
    for source, (kind, destination) in FILES.items():
        if kind is not None and kind not in kinds:
            continue
        text = _parts([source], values)
        if source.endswith("default.yaml.tmpl") and "processor" not in kinds:
            text = text.split("    vis_processor:")[0]
        written.append(_write(directory / Template(destination).substitute(values), text))
    hooks = ["parts/hooks_header.py.tmpl", *(f"parts/hooks_{k}.py.tmpl" for k in kinds)]
    written.append(_write(directory / "src" / values["package"] / "hooks.py", _parts(hooks, values)))
    if set(DEFAULT_KINDS) <= set(kinds):  # the classifier example: a config and a training test
        written.append(_write(directory / "examples" / f"{name}_tiny.yaml", _parts(["examples/tiny.yaml.tmpl"], values)))
        tests = ["tests/test_plugin.py.tmpl", *(f"parts/tests_{k}.py.tmpl" for k in kinds if k not in DEFAULT_KINDS)]
    else:
        tests = ["parts/tests_header.py.tmpl", *(f"parts/tests_{k}.py.tmpl" for k in kinds)]
    written.append(_write(directory / "tests" / f"test_{name}.py", _parts(tests, values)))
    return written


def _parts(sources: list[str], values: dict[str, str]) -> str:
    """The templates ``sources`` (under ``templates/plugin``), filled in and joined."""
    folder = resources.files("mm_core") / "templates" / "plugin"
    return "".join(Template(folder.joinpath(s).read_text(encoding="utf-8")).substitute(values) for s in sources)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    parser = command_parser("new-plugin", "Scaffold a pip-installable mm plugin package.")
    parser.add_argument("name", help="plugin name: the package becomes mm_NAME, the distribution mm-plugin-NAME")
    parser.add_argument("--dir", type=Path, default=None, help="target directory (default: ./mm-plugin-NAME)")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS), help=f"what to include, from {','.join(KINDS)}")
    args = parser.parse_args(argv)
    name = validate_name(args.name)
    directory = args.dir or Path(f"mm-plugin-{name.replace('_', '-')}")
    files = scaffold(name, directory, parse_kinds(args.kinds))
    print(f"wrote {len(files)} files under {directory}:")
    for path in files:
        print(f"  {path.relative_to(directory)}")
    print(f"next: pip install -e {directory} && mmrun list && pytest {directory / 'tests'}")
    return 0
