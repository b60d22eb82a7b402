"""Case SLA events on the violation feed: who receives them (filters), their message, MQTT topic and
idempotency key, and that the consumers of violations leave them alone."""

from __future__ import annotations

from api.alerts.filters import ViolationFilter
from api.alerts.openapi import CaseSlaChange, SlaCase
from core.case_settings import CasePriority, Verification
from processors.cases.model import Case, CaseOrigin, CaseState
from processors.cases.sla import CaseEventKind, CaseSlaEvent
from processors.outputs.feed import ViolationFeed, violations_of
from processors.outputs.mqtt_out import violation_topic
from tests.support.alerts import violation

CASE = Case(case_id="c_0001", type="bin_overflow", state=CaseState.DISPATCHED, priority=CasePriority.HIGH,
            verify=Verification.SENSOR, origin=CaseOrigin.VIOLATION, created_by="routing",
            created_time_ms=1_000, updated_time_ms=2_000, department="sanitation", grid="FT-11",
            district="futian", lat=22.54, lon=114.05, deadline_ms=10_000, warning_ms=8_000,
            escalated_to="city_inspection")


def published() -> tuple[ViolationFeed, list]:
    feed = ViolationFeed(100)
    feed.publish([violation(1)])
    feed.publish_case_events([CaseSlaEvent(CaseEventKind.SLA_BREACH, CASE, 10_000, 10_500)])
    return feed, feed.read_after(0, 10)


def test_case_events_follow_the_violation_changes_in_one_sequence_with_their_own_message() -> None:
    feed, [change, breach] = published()
    assert (change.seq, breach.seq) == (1, 2)
    assert breach.change == "case_sla_breach" and breach.violation is None
    assert breach.idempotency_key == "c_0001:case_sla_breach:10000"
    message = breach.message(feed.cursor(breach.seq), None)
    assert set(message) == {"id", "change", "idempotency_key", "published_time_ms", "case"}
    assert {key: message["case"][key] for key in ("case_id", "department", "deadline_ms", "due_ms",
                                                   "signalled_ms", "escalated_to")} == {
        "case_id": "c_0001", "department": "sanitation", "deadline_ms": 10_000, "due_ms": 10_000,
        "signalled_ms": 10_500, "escalated_to": "city_inspection"}
    assert violations_of([change, breach]) == [change.violation]
    # As the OpenAPI document describes it.
    assert set(message["case"]) == set(SlaCase.model_fields)
    CaseSlaChange.model_validate(message)


def test_a_filter_takes_case_events_only_when_it_asks_for_them() -> None:
    _, [change, breach] = published()
    everything_so_far = ViolationFilter()
    assert everything_so_far.matches_entry(change) and not everything_so_far.matches_entry(breach)
    breaches = ViolationFilter(events=("case_sla_breach",))
    assert breaches.matches_entry(breach) and not breaches.matches_entry(change)
    assert not ViolationFilter(events=("case_sla_warning",)).matches_entry(breach)
    both = ViolationFilter(events=("violation", "case_sla_breach"))
    assert both.matches_entry(change) and both.matches_entry(breach)


def test_a_case_event_matches_on_the_cases_fields_and_ignores_violation_only_fields() -> None:
    _, [_, breach] = published()
    wanted = {"events": ("case_sla_breach",)}
    assert ViolationFilter(**wanted, department=("sanitation",), grid=("FT-11",)).matches_entry(breach)
    assert not ViolationFilter(**wanted, department=("parks",)).matches_entry(breach)
    assert not ViolationFilter(**wanted, type=("illegal_parking",)).matches_entry(breach)
    assert ViolationFilter(**wanted, bbox="114.0,22.5,114.1,22.6").matches_entry(breach)
    assert not ViolationFilter(**wanted, bbox="113.0,22.5,113.1,22.6").matches_entry(breach)
    assert ViolationFilter(**wanted, severity=("critical",), device=("cam-9",)).matches_entry(breach)


def test_case_events_have_their_own_mqtt_topic() -> None:
    _, [change, breach] = published()
    assert violation_topic("citywatch/violations", change) == "citywatch/violations/parking/FT-11"
    assert violation_topic("citywatch/violations", breach) == (
        "citywatch/violations/cases/case_sla_breach/bin_overflow/FT-11")


def test_a_misspelt_event_kind_is_refused_with_the_closest_name() -> None:
    try:
        ViolationFilter.model_validate({"events": ["case_sla_breech"]})
    except ValueError as exc:
        assert "did you mean 'case_sla_breach'?" in str(exc)
    else:
        raise AssertionError("a misspelt event kind was accepted")
