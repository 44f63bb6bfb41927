"""The addon entry shipped inside the package: ``mitmdump -s <this file>`` (what `ccswitch run` does).

The checkout's ``addon.py`` is the same two lines; this one exists wherever ccswitch is installed
(``pip install .``, pipx), where there is no checkout. mitmproxy loads it as a script, so each
(re)load builds fresh addons.
"""

from ccswitch.mitm import make_addons

addons = make_addons()
