"""Smart-camera reports: validation (dead letters naming the field), de-duplication and enrichment."""

from __future__ import annotations

from processors.engine import Engine
from tests.support.events import reading
from tests.support.traffic import rules, run, same_regardless_of_delivery

CAM = ["camera_violation"]


def report(at_s, plate="粤B7", device="cam-1", **attributes):
    attributes = {"violation_code": "1625", "violation_type": "red_light", "plate": plate, "lane": 2,
                  "evidence_url": "http://cam/e.jpg", **attributes}
    attributes = {key: value for key, value in attributes.items() if value is not None}
    return reading(device, at_s, kind="camera_violation", **attributes)


def test_a_report_is_enriched_with_code_points_and_intersection():
    [violation] = run([report(0)], CAM)
    assert violation.type == "red_light" and violation.evidence.plate == "粤B7"
    assert violation.evidence.snapshot_url == "http://cam/e.jpg"
    details = violation.evidence.details
    assert details["points"] == 6 and details["code"] == "1625" and details["intersection"] == "ix-1"
    assert details["source"] == "smart_camera" and details["lane"] == 2


def test_a_code_alone_is_enough_when_the_table_knows_it():
    [violation] = run([report(0, violation_type=None, violation_code="1039")], CAM)
    assert violation.type == "illegal_parking"


def test_same_plate_and_type_within_the_window_is_one_incident():
    events = [report(0), report(100), report(350), report(700), report(10, plate="粤B8"),
              report(20, violation_type="speeding"), report(30, device="cam-2")]
    violations = run(events, CAM)
    assert len(violations) == 5  # 0 (100 and 350 continue it), 700, and the three different reports
    assert report(0).event_id in violations[0].evidence.event_ids


def test_borderline_window():
    assert len(run([report(0), report(300)], CAM)) == 1
    assert len(run([report(0), report(300.001)], CAM)) == 2


def test_reports_without_a_plate_are_never_merged():
    assert len(run([report(0, plate=None), report(1, plate=None)], CAM)) == 2


def test_invalid_reports_are_dead_lettered_naming_the_field():
    engine = Engine(rules(CAM), allowed_lateness_ms=0)
    bad = [report(0, plate=123), report(1, violation_type=None, violation_code="9999"),
           report(2, violation_type=None, violation_code=None), report(3, lane=[1]),
           report(4, violation_type="")]
    out = engine.process(bad, now_wall_ms=0)
    assert out.violations == []
    details = [letter.detail for letter in out.dead_letters]
    assert [letter.reason for letter in out.dead_letters] == ["invalid_field"] * 5
    assert details[0].startswith("attributes.plate") and "9999" in details[1]
    assert details[2].startswith("attributes.violation_type") and details[3].startswith("attributes.lane")
    assert details[4].startswith("attributes.violation_type")


def test_shuffled_and_duplicated_delivery():
    events = [report(i * 0.4, plate=f"粤B{i % 3}") for i in range(10)]
    assert len(same_regardless_of_delivery(events, CAM)) == 3
