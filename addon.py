"""Entry point for `mitmdump -s addon.py` / `mitmweb -s addon.py`."""

from ccswitch.mitm import make_addons

addons = make_addons()
