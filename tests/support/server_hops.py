"""A test's witness, loaded after ccswitch (`-s`): one JSON line per server connection mitmproxy
opened and closed (its address, and the address of its own end: port 0 for one made in memory)."""

import json
import os


class ServerHops:
    def _note(self, what: str, data) -> None:
        server = data.server
        with open(os.environ["SERVER_HOPS_LOG"], "a") as f:
            f.write(json.dumps({"hook": what, "address": list(server.address or ()),
                                "sockname": list(server.sockname or ())}) + "\n")

    def server_connected(self, data) -> None:
        self._note("connected", data)

    def server_disconnected(self, data) -> None:
        self._note("disconnected", data)


addons = [ServerHops()]
