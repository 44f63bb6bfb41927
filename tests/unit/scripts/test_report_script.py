"""scripts/report.py under a Python without ccswitch's dependencies says what to do instead."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "report.py"


def test_a_python_without_the_dependencies_gets_a_hint_not_a_traceback():
    # -S: no site-packages, as a system Python without PyYAML or pydantic
    done = subprocess.run([sys.executable, "-S", str(SCRIPT), "--days", "1"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "one of ccswitch's dependencies" in done.stderr and "ccswitch report" in done.stderr
