"""The README's configuration reference is generated from the config schema and must match it."""

from __future__ import annotations

from gateway.cli import config_doc
from tests.harness import ROOT


def test_readme_configuration_reference_matches_the_schema() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    block = readme[readme.index(config_doc.START):readme.index(config_doc.END) + len(config_doc.END)]
    assert block == config_doc.markdown(), "run: python -m gateway.cli.config_doc --write docs/configuration.md"


def test_every_config_key_has_a_description() -> None:
    assert config_doc.undocumented() == []


def test_every_schema_table_is_in_the_reference() -> None:
    documented = {cls for _, cls, _ in config_doc.TABLES}
    import msgspec

    from gateway.edges import config as C

    structs = {obj for obj in vars(C).values()
               if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj is not C._S}
    assert structs <= documented, structs - documented
