"""Every real payload of the corpus decodes to exactly the events (or dead letters) its file states."""

from __future__ import annotations

import pytest

from tests.conformance.corpus import Case, all_cases, event_view, expected_view, ingest
from tests.support.formats import REPO

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_payload_decodes_as_its_sender_means_it(case: Case) -> None:
    result = ingest(case)
    expected_events = case.expect.get("events", [])
    expected_letters = case.expect.get("dead_letters", [])
    letters = [(letter.reason, letter.detail) for letter in result.dead_letters]
    assert len(result.dead_letters) == len(expected_letters), f"dead letters: {letters}"
    for letter, expected in zip(result.dead_letters, expected_letters, strict=True):
        assert letter.reason == expected["reason"], letters
        assert letter.detail.startswith(expected.get("detail_starts_with", "")), letters
    # Each event is viewed with the fields its expectation states; an unexpected event with the basics.
    views = [event_view(event, expected_events[index] if index < len(expected_events) else {})
             for index, event in enumerate(result.events)]
    assert views == [expected_view(expected) for expected in expected_events]

def test_every_case_cites_its_source() -> None:
    assert CASES, "the corpus is empty"
    for case in CASES:
        # An upstream page, or for citywatch's own formats the repository file that defines them.
        assert case.url.startswith(("https://", "http://")) or (REPO / case.url).is_file(), case.name
