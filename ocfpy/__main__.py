"""`python -m ocfpy`: the same as the `ocfpy` command (for a venv without its bin/ on PATH,
or ExecStart=python3 -m ocfpy)."""

import sys

from ocfpy.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
