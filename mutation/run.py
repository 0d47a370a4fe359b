"""Mutation check: apply each small wrong change listed in ``mutants.yaml`` and run the tests that
must catch it. A mutant is *killed* when those tests fail with it applied; it *survives* when
they pass. Before the mutants, the same tests run on the unchanged code and must pass, so a kill
means the change was noticed, not that the test was broken already.

The working tree is never edited. For each mutant the package that holds the file (``core/src/
mm_core``, ``plugins/<p>/src/<pkg>``) is copied into a temporary folder, the change is applied
to the copy, and pytest runs with that folder first on ``PYTHONPATH`` — which wins over the
editable installs of ``make install`` in this process and in every ``mmrun`` / ``torchrun`` it
starts. The copy is deleted afterwards, also on Ctrl-C.

    make mutants                                 # everything (about 4 minutes on 2 CPUs)
    .venv/bin/python mutation/run.py --list      # the mutants, one a line
    .venv/bin/python mutation/run.py --only itc-mean-over-queries cider-ids-reversed
    .venv/bin/python mutation/run.py --no-baseline --timeout 300

Exit status: 0 when every mutant is killed, 1 when one survives or errs, 2 for a bad mutant
list (a snippet no longer in its file, or there more than once: update mutants.yaml).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    tests: list[str]
    why: str = ""
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    caught_by: str = ""
    source: Path = field(init=False)

    def __post_init__(self) -> None:
        self.source = REPO / self.file

    @property
    def package(self) -> tuple[Path, str]:
        """(the ``src`` folder, the top-level package) of the mutated file."""
        parts = Path(self.file).parts
        if "src" not in parts:
            raise ValueError(f"mutant {self.id}: {self.file} is not under a src/ folder")
        i = parts.index("src")
        return REPO.joinpath(*parts[: i + 1]), parts[i + 1]


def load_mutants(path: Path) -> list[Mutant]:
    entries = yaml.safe_load(path.read_text())["mutants"]
    mutants = [Mutant(**entry) for entry in entries]
    problems = []
    seen = set()
    for m in mutants:
        if m.id in seen:
            problems.append(f"{m.id}: the id is used twice")
        seen.add(m.id)
        if not m.source.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = m.source.read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.id}: its original snippet occurs {count} times in {m.file} (it must occur once)")
        if m.original == m.replacement:
            problems.append(f"{m.id}: replacement equals the original")
        if not m.tests:
            problems.append(f"{m.id}: no tests named")
    if problems:
        sys.exit("mutation/mutants.yaml is out of date:\n  " + "\n  ".join(problems)
                 + "\nhint: the code changed; update the snippet (copy it exactly from the file) or the tests")
    return mutants


def run_pytest(tests: list[str], pythonpath: str | None, timeout: float) -> tuple[int | None, str]:
    """Exit code of pytest on ``tests`` (``None`` on timeout) and the tail of its output."""
    env = dict(os.environ, **ENV)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "-o", "addopts=",
           "--timeout", str(int(timeout)), *tests]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout + 60)
        return proc.returncode, out[-3000:]
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None, "timed out"
    except BaseException:
        _kill_group(proc)
        raise


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def imported_from(package: str, pythonpath: str) -> str:
    """Where ``package`` is imported from with ``pythonpath`` in front (checks the copy wins)."""
    env = dict(os.environ, **ENV, PYTHONPATH=pythonpath)
    code = f"import importlib.util; print(importlib.util.find_spec({package!r}).origin)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def try_mutant(m: Mutant, timeout: float) -> None:
    src, package = m.package
    with tempfile.TemporaryDirectory(prefix=f"mm-mutant-{m.id}-") as tmp:
        site = Path(tmp) / "site"
        shutil.copytree(src / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
        target = site / Path(m.file).relative_to(src.relative_to(REPO))
        target.write_text(target.read_text().replace(m.original, m.replacement))
        origin = imported_from(package, str(site))
        if not origin.startswith(str(site)):
            m.status, m.detail = "error", f"{package} imports from {origin}, not the mutated copy"
            return
        started = time.monotonic()
        code, tail = run_pytest(m.tests, str(site), timeout)
        m.seconds = time.monotonic() - started
    if code is None:
        m.status = "killed (timeout)"
    elif code == 1:
        m.status = "killed"
        failed = [line for line in tail.splitlines() if line.startswith("FAILED ")]
        m.caught_by = failed[0][len("FAILED "):][:160] if failed else ""
    elif code == 0:
        m.status, m.detail = "SURVIVED", "the named tests pass with this change"
    else:
        m.status, m.detail = "error", f"pytest exit {code}:\n{tail}"


def print_table(mutants: list[Mutant]) -> None:
    width = max(len(m.id) for m in mutants)
    print(f"\n{'mutant':<{width}}  {'status':<17} {'seconds':>7}  file")
    for m in mutants:
        print(f"{m.id:<{width}}  {m.status:<17} {m.seconds:7.1f}  {m.file}")
    killed = sum(m.status.startswith("killed") for m in mutants)
    print(f"\nmutation score: {killed}/{len(mutants)} killed\n\ncaught by (the first failing test):")
    for m in mutants:
        if m.caught_by:
            print(f"  {m.id}: {m.caught_by}")
    for m in mutants:
        if m.detail:
            print(f"\n--- {m.id}: {m.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=HERE / "mutants.yaml")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip running the tests on unchanged code first")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (default 600)")
    args = parser.parse_args(argv)

    mutants = load_mutants(args.mutants)
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            parser.error(f"unknown mutant(s) {unknown}; see --list")
        mutants = [m for m in mutants if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id:<28} {m.file}\n{'':<28} {m.why}")
        return 0
    if not args.no_baseline:
        tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(tests)} test selections on the unchanged code ...", flush=True)
        code, tail = run_pytest(tests, None, args.timeout * 2)
        if code != 0:
            print(tail)
            print("\nthe named tests fail (or time out) without any mutant: fix them first", file=sys.stderr)
            return 1
    for i, m in enumerate(mutants, 1):
        print(f"[{i}/{len(mutants)}] {m.id} ...", end=" ", flush=True)
        try_mutant(m, args.timeout)
        print(f"{m.status} ({m.seconds:.0f} s)", flush=True)
    print_table(mutants)
    return 0 if all(m.status.startswith("killed") for m in mutants) else 1


if __name__ == "__main__":
    # SIGTERM as Ctrl-C: the running pytest's process group is killed and the copy deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the temporary copies are gone already; the tree was never touched
        sys.exit(130)
