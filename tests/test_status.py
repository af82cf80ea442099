"""The shared result vocabulary: worst status wins, blocking reasons withhold the flag."""

from sarco_nn.status import Reason, Status, Verdict, format_reasons, is_finished, parse_reasons


def test_empty_verdict_is_ok_and_allows_flag():
    v = Verdict()
    assert v.status is Status.OK and v.flag_allowed
    assert v.columns() == {"status": "ok", "reasons": "", "qc_score": ""}


def test_worst_status_wins_and_blocking_reason_withholds_flag():
    v = Verdict(qc_score=0.25)
    v.add(Reason("qc_score_high", "folds disagree", blocks_flag=False))
    assert v.status is Status.REVIEW and v.flag_allowed
    v.add(Reason("empty_mask", "no muscle pixel"))
    assert not v.flag_allowed
    v.add(Reason("not_ct", "values are not HU", status=Status.FAILED))
    assert v.status is Status.FAILED
    assert v.columns()["qc_score"] == "0.250"


def test_reasons_round_trip_and_separator_is_escaped():
    reasons = [Reason("a_b", "x | y"), Reason("c", "plain")]
    cell = format_reasons(reasons)
    assert parse_reasons(cell) == [("a_b", "x / y"), ("c", "plain")]
    assert parse_reasons("Some legacy text") == [("other", "Some legacy text")]


def test_resume_rule():
    assert is_finished("ok") and is_finished("review")
    assert not is_finished("failed") and not is_finished(None) and not is_finished("")
