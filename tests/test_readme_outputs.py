"""The README's "Outputs and units" tables name every body-composition column with its unit (issue #18, item 6).

Why a test: a column added to results.csv or cases.csv without a README row is a number nobody can read.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _expand(name: str) -> list[str]:
    """`{imat,vat,sat}_area_cm2` → imat_area_cm2, vat_area_cm2, sat_area_cm2 (`{tissue}` = all four)."""
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else (["muscle", "imat", "vat", "sat"] if p == "tissue" else p.split(","))
               for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def documented_units(section: str) -> dict[str, str]:
    """{column: unit cell} of every `| column | unit | meaning |` row in the README section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(section, 1)[1]
    body = re.split(r"\n## ", body, maxsplit=1)[0]
    out: dict[str, str] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            for column in _expand(name):
                out[column] = cells[1]
    return out


def test_every_body_composition_result_column_has_a_unit_in_the_readme():
    from sarco_nn.body_composition import RESULT_COLUMNS

    units = documented_units("### Body composition (muscle, IMAT, VAT, SAT)")
    missing = [c for c in RESULT_COLUMNS if c not in units]
    assert not missing, f"README body-composition table lacks {missing}"
    assert all(units[c] for c in RESULT_COLUMNS)  # "—" for a unitless column, never blank
    assert units["vat_area_cm2"] == "cm²" and units["sati_cm2_m2"] == "cm²/m²" and units["imat_hu_sd"] == "HU"


def test_every_per_tissue_evaluation_column_has_a_unit_in_the_readme():
    from sarco_nn.evaluation.tissues import ALL_CASE_COLUMNS

    units = documented_units("### Body composition (muscle, IMAT, VAT, SAT)")
    missing = [c for c in ALL_CASE_COLUMNS if c not in units]
    assert not missing, f"README per-tissue evaluation table lacks {missing}"
    assert units["sat_area_error_cm2"] == "cm²" and units["imat_hu_error"] == "HU" and units["vat_dice"] == "—"


def test_expand_reads_the_readme_brace_notation():
    assert _expand("{imat,vat}_hu_mean") == ["imat_hu_mean", "vat_hu_mean"]
    assert len(_expand("{tissue}_dice")) == 4 and _expand("level") == ["level"]
