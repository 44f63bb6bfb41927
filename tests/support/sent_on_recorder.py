"""A test's witness, loaded after ccswitch (`-s`): after every request hook pass, one JSON line per
flow mitmproxy will send on itself (no answer set, not killed): where to, and its x-api-key."""

import json
import os


class SentOnRecorder:
    def request(self, flow) -> None:
        if flow.response is None and flow.error is None and flow.live:
            with open(os.environ["SENT_ON_LOG"], "a") as f:
                f.write(json.dumps({"host": flow.request.host, "x-api-key": flow.request.headers.get("x-api-key")}) + "\n")


addons = [SentOnRecorder()]
