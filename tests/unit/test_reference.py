"""docs/configuration.md is generated from the config models and must not drift."""

from __future__ import annotations

from feddns.reference import render
from tests.support import REPO


def test_the_configuration_reference_matches_the_models() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render(), "regenerate: python -m feddns.reference > docs/configuration.md"


def test_every_section_and_key_of_the_demo_config_is_documented() -> None:
    doc = render()
    for key in ("`dns.listen`", "`clusters[].source`", "`selection.hold_down`",
                "`locality.trusted_forwarders`", "`snapshot.path`", "`bus.keys`",
                "`observe.listen`", "`services[].weights`", "`names.explain`"):
        assert key in doc, key
