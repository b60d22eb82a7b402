"""Every real payload of the corpus decodes to exactly the events (or dead letters) its file states."""

from __future__ import annotations

import pytest

from ingest.codecs.catalogue import CODEC_NAMES
from ingest.vendor_maps import vendor_map_named
from tests.conformance.corpus import CORPUS, Case, all_cases, event_view, expected_view, ingest
from tests.support.formats import REPO, shipped_vendor_maps

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


def test_every_format_and_every_shipped_vendor_map_has_real_payloads_and_the_docs_list_them() -> None:
    folders = {path.name for path in CORPUS.iterdir() if path.is_dir() and any(path.glob("*.yaml"))}
    assert set(CODEC_NAMES) <= folders
    maps = shipped_vendor_maps()
    used = {named[0] for case in CASES for device in case.devices
            if (named := vendor_map_named(device.model, maps)) is not None}
    assert used == set(maps)
    listed = (REPO / "docs" / "formats.md").read_text(encoding="utf-8")
    assert [folder for folder in sorted(folders) if f"`{folder}/`" not in listed] == []
