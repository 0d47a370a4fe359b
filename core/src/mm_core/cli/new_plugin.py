"""``mmrun new-plugin NAME``: scaffold a complete, pip-installable third-party plugin.

The package holds a hook module, a tiny model, a processor, a dataset builder that generates
its own sample, a task, default YAMLs, an example config, tests using :mod:`mm_core.testing`
and a README — or the subset named with ``--kinds``.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from mm_core import __version__
from mm_core.cli.main import command_parser
from mm_core.errors import MMError

KINDS = ("model", "processor", "dataset", "task")
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
}
REGISTRATIONS = {
    "model": ("register_models", '"${name}_classifier": "$package.model:Classifier"'),
    "processor": ("register_processors", '"${name}_features": "$package.processors:FeatureProcessor"'),
    "dataset": ("register_datasets",
                '"${name}_sample": {"target": "$package.data:SampleBuilder", "data_type": "features"}'),
    "task": ("register_tasks", '"${name}_classification": "$package.task:ClassificationTask"'),
}


def validate_name(name: str) -> str:
    """A plugin name usable as ``mm-plugin-NAME`` and ``import mm_NAME``."""
    if not NAME_PATTERN.match(name) or keyword.iskeyword(name) or name.startswith("mm"):
        raise MMError(
            f"invalid plugin name '{name}'",
            hint="use 2-41 lowercase letters, digits and underscores, starting with a letter and not with 'mm' "
            "(the package becomes mm_NAME, the distribution mm-plugin-NAME)",
        )
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
              "core_version": __version__}
    values["names"] = ", ".join(Template(REGISTRATIONS[k][1].split(":")[0].strip('"')).substitute(values) for k in kinds)
    templates = resources.files("mm_core") / "templates" / "plugin"
    written = []
    for source, (kind, destination) in FILES.items():
        if kind is not None and kind not in kinds:
            continue
        text = Template(templates.joinpath(source).read_text(encoding="utf-8")).substitute(values)
        if source.endswith("default.yaml.tmpl") and "processor" not in kinds:
            text = text.split("    vis_processor:")[0]
        written.append(_write(directory / Template(destination).substitute(values), text))
    written.append(_write(directory / "src" / values["package"] / "hooks.py", _hooks_module(kinds, values)))
    tests = templates.joinpath("tests/test_plugin.py.tmpl").read_text(encoding="utf-8")
    if set(kinds) == set(KINDS):
        written.append(_write(directory / "examples" / f"{name}_tiny.yaml",
                              Template(templates.joinpath("examples/tiny.yaml.tmpl").read_text()).substitute(values)))
        written.append(_write(directory / "tests" / f"test_{name}.py", Template(tests).substitute(values)))
    else:
        written.append(_write(directory / "tests" / f"test_{name}.py", _partial_tests(kinds, values)))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _hooks_module(kinds: list[str], values: dict[str, str]) -> str:
    lines = [f'"""Registration hooks of {values["dist"]}: public names -> lazy targets (nothing heavy imported)."""',
             "", "from mm_core.hookspecs import hookimpl", "", 'MM_API_VERSION = "2.0"', ""]
    for kind in kinds:
        hook, entry = REGISTRATIONS[kind]
        lines += ["", "@hookimpl", f"def {hook}():", f"    return {{{Template(entry).substitute(values)}}}", ""]
    return "\n".join(lines)


def _partial_tests(kinds: list[str], values: dict[str, str]) -> str:
    body = [f'"""Contract tests of {values["dist"]} (mm_core.testing)."""', "", "import mm_core.testing as mmt", ""]
    name = values["name"]
    if "model" in kinds:
        body += ["", "def test_model():", "    import torch", "",
                 '    batch = {"features": torch.randn(4, 8), "label": torch.tensor([0, 1, 2, 0])}',
                 f'    mmt.check_model("{name}_classifier", batch)', ""]
    if "processor" in kinds:
        body += ["", "def test_processor():", f'    assert mmt.check_processor("{name}_features", [0.0] * 8).shape == (8,)', ""]
    if "dataset" in kinds:
        body += ["", "def test_builder(tmp_path):", f'    splits = mmt.check_builder("{name}_sample", tmp_path)',
                 '    assert len(splits["train"]) == 64', ""]
    if "task" in kinds:
        body += ["", "def test_task():", f'    mmt.check_task("{name}_classification")', ""]
    return "\n".join(body)


def main(argv: list[str]) -> int:
    parser = command_parser("new-plugin", "Scaffold a pip-installable mm plugin package.")
    parser.add_argument("name", help="plugin name: the package becomes mm_NAME, the distribution mm-plugin-NAME")
    parser.add_argument("--dir", type=Path, default=None, help="target directory (default: ./mm-plugin-NAME)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"what to include, from {','.join(KINDS)}")
    args = parser.parse_args(argv)
    name = validate_name(args.name)
    directory = args.dir or Path(f"mm-plugin-{name.replace('_', '-')}")
    files = scaffold(name, directory, parse_kinds(args.kinds))
    print(f"wrote {len(files)} files under {directory}:")
    for path in files:
        print(f"  {path.relative_to(directory)}")
    print(f"next: pip install -e {directory} && mmrun list && pytest {directory / 'tests'}")
    return 0
