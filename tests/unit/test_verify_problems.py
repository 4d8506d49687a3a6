"""verify's report stays bounded without hiding tampering behind other findings (#15)."""

from __future__ import annotations

from vmsnap.verify_log import MAX_PROBLEMS, Problems


def test_tampering_is_listed_first_and_each_kind_is_capped_on_its_own() -> None:
    problems = Problems()
    for n in range(MAX_PROBLEMS + 50):
        problems.add("rules", f"position {n}: not allowed")
    problems.add("chain", "position 7: event changed after it was sealed")
    report = problems.report(1000, None)
    assert report.problems[0] == "position 7: event changed after it was sealed"
    assert report.problems[-1] == "... and 50 more problem(s) of kind rules"
    assert not report.ok


def test_one_finding_at_consecutive_events_is_one_line() -> None:
    problems = Problems()
    previous = 0
    for position in (1, 2, 3, 5):
        problems.at("log", position, "the stored event cannot be read", previous)
        previous = position
    problems.at("log", 9, "the stored event cannot be read", 8)
    report = problems.report(9, None)
    assert report.problems == (
        "positions 1-5: the stored event cannot be read",
        "position 9: the stored event cannot be read",
    )
