"""``MM_TOY_EVENTS=<file>``: the toy plugin's hook modules append every hook call there as one
JSON line (hook, rank, arguments), so tests see which hooks a real run called."""

import json
import os


def record(hook, **fields):
    path = os.environ.get("MM_TOY_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"hook": hook, "rank": int(os.environ.get("RANK", "0")), **fields}) + "\n")
