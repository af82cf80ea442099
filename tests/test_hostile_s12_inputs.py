"""Hostile inputs, session 12 (HOSTILE_FINDINGS.md #113+, h3): evaluate, the review page, the api."""

from __future__ import annotations

import math

from sarco_nn.evaluation.tissues import console_line, tissue_summary


def _row(dice: float, ref: float, pred: float) -> dict:
    return {"vat_dice": dice, "vat_area_ref_cm2": ref, "vat_area_pred_cm2": pred, "vat_area_error_cm2": pred - ref,
            "vat_hu_error": None}


def test_a_tissue_absent_from_every_reference_and_prediction_has_no_dice_not_a_perfect_one():
    """#113: VAT absent in every case (an annotation protocol without VAT) was summarised as Dice 1.000, n 3."""
    vat = tissue_summary([_row(1.0, 0.0, 0.0) for _ in range(3)])["vat"]
    assert vat["n"] == 3 and vat["dice_n"] == 0 and vat["dice_mean"] is None
    assert "VAT n/a (absent in every case)" in console_line({"vat": vat})


def test_both_empty_cases_leave_the_dice_summary_cases_holding_the_tissue_count():
    vat = tissue_summary([_row(1.0, 0.0, 0.0), _row(0.5, 10.0, 6.0), _row(0.0, 4.0, 0.0)])["vat"]
    assert vat["dice_n"] == 2 and math.isclose(vat["dice_mean"], 0.25) and vat["dice_min"] == 0.0
    assert vat["n"] == 3 and math.isclose(vat["area_agreement_cm2"]["bias"], (0 - 4 - 4) / 3)


def test_review_page_of_a_folder_named_like_a_placeholder_and_hostile_case_ids(tmp_path):
    """#114: an output folder named "{{ROWS}}" put every patient's row JSON into the page's <title> and <h1>
    (the placeholders were filled one after another). Case ids that try to close the script stay data."""
    import csv
    import json
    import re

    from sarco_nn.review.gallery import write_review_html

    out = tmp_path / "{{ROWS}}"
    out.mkdir()
    ids = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(2)>", "{{TITLE}}", "é日本\u202egpj",
           "x" * 3000]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["case_id", "status", "overlay"])
        writer.writeheader()
        writer.writerows({"case_id": c, "status": "review", "overlay": f"overlays/{c}.png"} for c in ids)
    page = write_review_html(out).read_text(encoding="utf-8")
    assert re.findall(r"<title>(.*?)</title>", page) == ["sarco review: {{ROWS}}"]
    assert len(re.findall(r"<script\b", page, re.I)) == 3  # the two JSON blocks and the page's own script
    block = page.split('<script id="rows" type="application/json">')[1].split("</script>")[0]
    rows = json.loads(block)
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert not any(set(r["overlay"]) & set('<>"\' ') for r in rows)  # percent-encoded in the image URL
