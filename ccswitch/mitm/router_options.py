"""The router's options (`--set ccswitch_…`), declared apart from the hooks that read them."""


def add_options(loader) -> None:
    loader.add_option("ccswitch_max_body", int, 32 * 1024 * 1024,
                      "Largest request body (bytes) ccswitch routes; larger ones get a 413 "
                      "in the client's API format (Anthropic's own limit is 32 MB).")
    loader.add_option("ccswitch_ledger", bool, True,
                      "Record every routed request's usage in the rules' usage_db (SQLite or PostgreSQL).")
    loader.add_option("ccswitch_offline", bool, False,
                      "The intercepted hosts are unreachable (relays only): answer their "
                      "unrouted requests (e.g. Claude Code's settings calls) with 404 at once "
                      "instead of a 502 that clients retry for many seconds.")
    loader.add_option("ccswitch_keep_stream", int, 1024 * 1024,
                      "Bytes of each streamed answer kept on the flow, so mitmweb and `-w` files "
                      "show what was streamed (0: none). Plain mitmdump, which drops each "
                      "flow once answered, keeps none unless flow_detail is 3 or more.")
    loader.add_option("ccswitch_shutdown_grace", int, 8,
                      "Seconds that requests in flight get to finish when the proxy shuts down "
                      "(SIGTERM, Ctrl-C); new ones get a 503 meanwhile. Past it, streams end with "
                      "their protocol's error event and other requests get a 503. Keep it below "
                      "your supervisor's kill timeout (docker stop: 10 s).")
