"""The README's effect table matches the registry."""

from __future__ import annotations

from pathlib import Path

from tools.docs import current, effects_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_effect_table_is_current():
    assert current(README) == effects_table(), "README effect table is stale: run `make docs`"


def test_table_lists_every_effect_with_parameters():
    table = effects_table()
    assert "| `pedalboard.Reverb` |" in table and "`room_size` = 0.5 [0…1]" in table
    assert "| `plugin.external` |" in table and "`path` (required)" in table
