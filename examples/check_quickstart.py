"""`make demo`'s last step: are the quickstart's scores in the range a trained model reaches?

The exact figures depend on the CPU's floating-point paths (see README, "Quickstart"), so the demo
checks floors instead of the digits: usage `python examples/check_quickstart.py output/quickstart`.
Exit code 1 (with the figures) when a score is below its floor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: (split, metric) -> the floor; the untrained model scores 0.0, trained runs measured 3.35-3.70 val CIDEr.
FLOORS = {("val", "CIDEr"): 2.0, ("val", "Bleu_4"): 0.35, ("test", "CIDEr"): 1.5, ("test", "Bleu_4"): 0.3}


def last_scores(run_dir: Path) -> dict[tuple[str, str], float]:
    """The last evaluation of each split in ``metrics.jsonl``: (split, metric) -> value."""
    scores: dict[tuple[str, str], float] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if event.get("type") == "eval":
            scores.update({(event["split"], k): v for k, v in event.items() if isinstance(v, (int, float))})
    return scores


def main(argv: list[str]) -> int:
    scores = last_scores(Path(argv[0] if argv else "output/quickstart"))
    low = {key: scores.get(key) for key, floor in FLOORS.items() if scores.get(key, -1.0) < floor}
    shown = ", ".join(f"{split} {metric} {scores.get((split, metric), float('nan')):.4f} (>= {floor})"
                      for (split, metric), floor in FLOORS.items())
    print(("quickstart scores in the expected range: " if not low else "quickstart scores BELOW the expected "
           "range: ") + shown)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
