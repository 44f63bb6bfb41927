"""State shared by several ccswitch instances (`state:` in rules.yaml): Redis behind the
boards routing keeps.  Only ccswitch.mitm uses it; the `redis` package is an extra
(``pip install 'ccswitch[redis]'``), imported only when a rules file names a Redis URL."""
