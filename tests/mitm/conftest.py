"""Addon tests: each module's `RULES` opened as the gateway's rules file."""

import pytest

from ccswitch.mitm.gateway import Gateway


def open_gateway(tmp_path, rules_text: str) -> Gateway:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text)
    gateway = Gateway()
    gateway.rules_file.open(str(path))
    return gateway


@pytest.fixture
def gateway(request, tmp_path):
    return open_gateway(tmp_path, request.module.RULES)
