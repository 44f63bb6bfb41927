"""Entry point for `mitmdump -s addon.py` / `mitmweb -s addon.py`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ccswitch.addon import make_addons  # noqa: E402

addons = make_addons()
