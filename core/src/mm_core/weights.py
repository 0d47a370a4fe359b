"""Weights coverage: where each tensor of a built model came from, and the check that stops a
build when a part no named file filled would silently start from random (docs/weights.md)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mm_core.errors import CheckpointError

log = logging.getLogger(__name__)


class WeightSources:
    """State-dict key -> the file it was loaded from, or ``fresh: <why>`` (random on purpose);
    a later record of a key overrides an earlier one. Modules are a key's first name."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.files: list[str] = []

    def loaded(self, keys: Iterable[str], source: str) -> None:
        self.files += [source] if source not in self.files else []
        self.sources.update(dict.fromkeys(keys, source))

    def fresh(self, keys: Iterable[str], why: str) -> None:
        self.sources.update(dict.fromkeys(keys, f"fresh: {why}"))

    def table(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        counts = Counter((k.split(".")[0], self.sources.get(k, "NOT LOADED")) for k in keys)
        return [{"module": m, "source": s, "tensors": n} for (m, s), n in counts.items()]

    def check(self, keys: Iterable[str], allow: Any = None, hints: Mapping[str, str] | None = None,
              what: str = "the model") -> None:
        """Raise naming the modules no file filled and the model did not declare fresh, unless
        ``allow`` (``model.allow_random_init``) is ``True`` or lists them (modules or key prefixes)."""
        unfilled = [k for k in keys if k not in self.sources]
        allowed = [allow] if isinstance(allow, str) else [] if allow in (None, False, True) else [str(a) for a in allow]
        permitted = {k for k in unfilled if allow is True or any(k == a or k.startswith(f"{a}.") for a in allowed)}
        self.fresh(permitted, "model.allow_random_init")
        missing = Counter(k.split(".")[0] for k in unfilled if k not in permitted)
        if missing:
            todo = sorted({(hints or {}).get(m, "") for m in missing} - {""})
            raise CheckpointError(
                f"{what}: {sum(missing.values())} tensors would start from random weights; no file the config "
                "names fills them:\n" + "\n".join(f"  {m}: {n} tensor{'s' * (n > 1)}" for m, n in missing.items())
                + f"\n  files read: {', '.join(self.files) or 'none'}",
                hint=(f"set {'; '.join(todo)}, or " if todo else "") + "list them in model.allow_random_init "
                f"(e.g. [{', '.join(missing)}]) to start them from random on purpose")


def report_weights(model: Any, output_dir: Path | None) -> None:
    """Log the module / tensors / source table of a model keeping ``weight_sources``; write it to
    ``<output_dir>/weights.json``."""
    sources = getattr(model, "weight_sources", None)
    if isinstance(sources, WeightSources):
        rows = sources.table(model.state_dict())
        width = max((len(r["module"]) for r in rows), default=0)
        log.info("weights:\n%s", "\n".join(f"  {r['module']:<{width}} {r['tensors']:>6}  {r['source']}" for r in rows))
        if output_dir is not None:
            (output_dir / "weights.json").write_text(json.dumps({"files": sources.files, "modules": rows}, indent=1))
