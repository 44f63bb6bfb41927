#!/usr/bin/env python3
"""The `ccswitch report` command, runnable from a checkout where ccswitch itself is not installed
(the Python running it needs ccswitch's dependencies: PyYAML, pydantic, matplotlib…):

    python scripts/report.py [--rules PATH] [--db PATH] [--days N | --since D --until D]
                             [--by model|upstream|route|session|client] [--json] [--out DIR]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from ccswitch.cli.report import main
except ModuleNotFoundError as missing:      # a Python without ccswitch's dependencies
    if (missing.name or "").partition(".")[0] == "ccswitch":
        raise
    sys.exit(f"scripts/report.py: this Python lacks {missing.name!r}, one of ccswitch's dependencies: run it "
             "with the Python ccswitch is installed in (e.g. .venv/bin/python scripts/report.py), "
             "or use `ccswitch report`")

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="scripts/report.py"))
