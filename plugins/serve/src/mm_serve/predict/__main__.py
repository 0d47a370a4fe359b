"""``python -m mm_serve.predict ARGS`` = ``mmrun predict ARGS`` (what ``torchrun -m`` launches)."""

import sys

from mm_core.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
