"""The README documents every setting (the table is generated from ``e2e_otel.conf.OPTIONS``)."""

from __future__ import annotations

from pathlib import Path

from e2e_otel.conf import OPTIONS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_has_a_readme_row() -> None:
    documented = {line.split("`")[1] for line in README.splitlines() if line.startswith("| `")}
    assert set(OPTIONS) <= documented, sorted(set(OPTIONS) - documented)


def test_readme_rows_name_only_real_settings() -> None:
    table = README[README.index("| key | default | env | meaning |"):]
    table = table[: table.index("\n\n")]
    rows = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(OPTIONS), sorted(rows ^ set(OPTIONS))
