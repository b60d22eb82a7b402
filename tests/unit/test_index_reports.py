"""Published reports: frozen once published, whatever arrives later for their period; the next report states
how much late data arrived for the previous one; published on schedule once the allowed lateness has passed,
once per period however often it is asked. Real SQLite stores; the clock is moved by the test."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from api.report_page import render_report
from core.index_settings import IndexSettings, PeriodKind, ReportSettings
from core.models import ExposureTotal
from core.settings import RelationalSettings
from processors.indices.method import PlaceIndex
from processors.indices.periods import InvalidPeriod, parse_period
from processors.indices.publisher import ReportPublisher
from processors.indices.ranking import rank
from processors.indices.report import write_report_csv
from processors.indices.service import IndexService, PeriodNotEnded
from store.reports import ReportStore
from store.sqlite_store import SqliteStore
from tests.support.indices import TIME_ZONE, City, generate, local_ms
from tests.support.stores import KEEP_ALL

CAMERA = "cam-d0-g0-0"


@dataclass
class Clock:
    now_ms: int

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Running:
    service: IndexService
    store: SqliteStore
    reports: ReportStore
    clock: Clock
    city: City


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    city = generate(date(2026, 10, 1), date(2026, 12, 31), districts=2, grids=2, intersections=2,
                    with_cases=False)
    store = SqliteStore.in_directory(tmp_path / "data", KEEP_ALL)
    store.write_exposures(city.exposure_totals())
    store.flush()
    reports = ReportStore.open(RelationalSettings(), tmp_path)
    clock = Clock(local_ms(date(2026, 12, 10)))
    yield Running(IndexService(IndexSettings(), TIME_ZONE, store, reports=reports, now_ms=clock), store,
                  reports, clock, city)
    store.close()
    reports.close()


NOVEMBER = parse_period(PeriodKind.MONTH, "2026-11")


def late_crossings(running: Running, day: str, extra: float) -> None:
    """A camera's total for a day of November raised after the report: a late upload."""
    key = (day, CAMERA, "stop_line_crossings")
    running.store.write_exposures([ExposureTotal(day=day, device_id=CAMERA, counter="stop_line_crossings",
                                                 value=running.city.totals[key] + extra,
                                                 tags=running.city.tags[CAMERA])])
    running.store.flush()


def test_a_published_report_does_not_change_when_late_data_arrives(running: Running) -> None:
    published = running.service.publish(NOVEMBER, "request")
    assert published.created and published.content["report_id"] == "month-2026-11"
    assert published.content["method_version"] == IndexSettings().method_version
    frozen = json.dumps(published.content, sort_keys=True)
    live_before = running.service.figures(NOVEMBER)["traffic"].levels["intersection"]["x-d0-g0-0"]

    late_crossings(running, "2026-11-28", 5000)
    again = running.service.publish(NOVEMBER, "request")
    assert not again.created
    assert json.dumps(again.content, sort_keys=True) == frozen
    assert json.dumps(running.reports.get("month-2026-11"), sort_keys=True) == frozen
    # What is computed live has moved; the report has not.
    live_after = running.service.figures(NOVEMBER)["traffic"].levels["intersection"]["x-d0-g0-0"]
    assert live_after.components[0].denominator == live_before.components[0].denominator + 5000


def test_the_next_report_states_the_late_data_of_the_previous_period(running: Running) -> None:
    first = running.service.publish(NOVEMBER, "request").content
    assert first["late_data_for_previous"] is None  # October was never published
    late_crossings(running, "2026-11-28", 5000)
    late_crossings(running, "2026-11-29", 250)
    running.clock.now_ms = local_ms(date(2027, 1, 5))
    december = running.service.publish(parse_period(PeriodKind.MONTH, "2026-12"), "request").content
    late = december["late_data_for_previous"]
    assert (late["report_id"], late["published_ms"]) == ("month-2026-11", first["published_ms"])
    crossings = late["figures"]["stop_line_crossings"]
    published = first["denominators"]["city"]["city"]["stop_line_crossings"]
    assert crossings == {"published": published, "now": published + 5250, "late": 5250.0,
                         "late_share": 5250 / published}
    assert late["figures"]["red_light_crossings"]["late"] == 0
    assert late["places_changed"] == {"intersection": 1, "grid": 1, "district": 1}
    assert late["any"] is True


def test_a_period_that_has_not_ended_is_not_published(running: Running) -> None:
    with pytest.raises(PeriodNotEnded, match="month 2026-12 ends at local midnight after 2026-12-31"):
        running.service.publish(parse_period(PeriodKind.MONTH, "2026-12"), "request")
    assert running.reports.list() == []


def test_reports_are_published_on_schedule_after_the_allowed_lateness_once(running: Running,
                                                                            tmp_path: Path) -> None:
    settings = IndexSettings(reports=ReportSettings(periods=[PeriodKind.MONTH], allowed_lateness_h=72))
    clock = Clock(local_ms(date(2026, 12, 3), hour=23))  # 71 h after November ended
    service = IndexService(settings, TIME_ZONE, running.store, reports=running.reports, now_ms=clock)
    # A second replica with its own publisher over the same report database.
    other = IndexService(settings, TIME_ZONE, running.store, reports=ReportStore.open(RelationalSettings(),
                                                                                      tmp_path), now_ms=clock)
    assert ReportPublisher(service, 60).check() == ["month-2026-10"]  # October's lateness passed long ago
    clock.now_ms = local_ms(date(2026, 12, 4), hour=1)
    assert ReportPublisher(service, 60).check() == ["month-2026-11"]
    assert ReportPublisher(other, 60).check() == []
    assert [(r.report_id, r.method_version) for r in running.reports.list()] == [
        ("month-2026-11", settings.method_version), ("month-2026-10", settings.method_version)]
    assert running.reports.get("month-2026-11")["published_by"] == "schedule"  # type: ignore[index]


def test_the_csv_has_a_row_per_place_with_each_component_next_to_the_score(running: Running) -> None:
    content = running.service.publish(NOVEMBER, "request").content
    out = io.StringIO()
    write_report_csv(content, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    district = next(r for r in rows if (r["index"], r["level"], r["place"]) == ("traffic", "district", "d0"))
    shown = next(p for p in content["indices"]["traffic"]["levels"]["district"] if p["place"] == "d0")
    assert float(district["score"]) == shown["score"] and int(district["rank"]) == shown["rank"]
    assert float(district["red_light_denominator"]) == shown["components"][0]["denominator"]
    assert len(rows) == sum(len(places) for index in content["indices"].values()
                            for places in index["levels"].values())


@pytest.mark.parametrize(("kind", "key", "first", "last"), [
    (PeriodKind.DAY, "2026-11-03", "2026-11-03", "2026-11-03"),
    (PeriodKind.WEEK, "2026-W01", "2025-12-29", "2026-01-04"),  # weeks start on Monday (ISO weeks)
    (PeriodKind.MONTH, "2024-02", "2024-02-01", "2024-02-29"),
    (PeriodKind.QUARTER, "2026-Q4", "2026-10-01", "2026-12-31"),
    (PeriodKind.HALF, "2026-H1", "2026-01-01", "2026-06-30"),
])
def test_periods_are_local_calendar_periods(kind: PeriodKind, key: str, first: str, last: str) -> None:
    period = parse_period(kind, key)
    assert (period.first_day, period.last_day, period.key) == (first, last, key)
    assert period.previous().next() == period
    # The local midnight that starts it, in the city's zone (UTC+8): 16:00 UTC the day before.
    assert period.start_ms(TIME_ZONE) == local_ms(date.fromisoformat(first))


def test_a_key_that_names_no_period_is_refused_with_the_expected_form() -> None:
    with pytest.raises(InvalidPeriod, match=r"'2026-13' is not a month \(like '2026-11'\)"):
        parse_period(PeriodKind.MONTH, "2026-13")
    with pytest.raises(InvalidPeriod, match=r"'2026-Q5' is not a quarter"):
        parse_period(PeriodKind.QUARTER, "2026-Q5")
    with pytest.raises(InvalidPeriod, match=r"'2025-W53' is not a week"):  # 2025 has 52 ISO weeks, 2026 53
        parse_period(PeriodKind.WEEK, "2025-W53")
    assert parse_period(PeriodKind.WEEK, "2026-W53").last_day == "2027-01-03"
    with pytest.raises(InvalidPeriod, match=r"'0001-01-01' is not a day \(like '2026-11-03'\): years 1900 to "
                                            r"9998"):
        parse_period(PeriodKind.DAY, "0001-01-01")


def scored(place: str, score: float | None, coverage: float = 1.0) -> PlaceIndex:
    return PlaceIndex(place, score, None if score is None else "pass", coverage, ())


def test_equal_scores_share_a_rank_and_movers_need_both_periods() -> None:
    now = {"a": scored("a", 90), "b": scored("b", 80), "c": scored("c", 80), "d": scored("d", 70),
           "e": scored("e", 99, coverage=0.3), "f": scored("f", None), "g": scored("g", 60)}
    before = {"a": scored("a", 95), "b": scored("b", 70), "c": scored("c", 79.5), "d": scored("d", 71),
              "e": scored("e", 10)}
    ranking = rank(now, before, min_coverage=0.5, movers=2)
    assert [(p.place, p.rank) for p in ranking.ranked] == [("a", 1), ("b", 2), ("c", 2), ("d", 4), ("g", 5)]
    assert [(p.place, p.reason) for p in ranking.unranked] == [("e", "low_coverage"), ("f", "no_score")]
    assert [(p.place, p.score_change) for p in ranking.most_improved] == [("b", 10.0), ("c", 0.5)]
    assert [(p.place, p.score_change) for p in ranking.most_worsened] == [("a", -5.0), ("d", -1.0)]
    by_place = ranking.by_place()
    # Before: a 95, c 79.5, d 71, b 70, e 10 (fully covered then).
    assert (by_place["b"].previous_rank, by_place["b"].rank_change) == (4, 2)
    assert (by_place["g"].previous_score, by_place["g"].rank_change) == (None, None)


def test_the_printable_page_states_the_late_data_of_the_previous_report(running: Running) -> None:
    running.service.publish(NOVEMBER, "request")
    late_crossings(running, "2026-11-28", 5000)
    running.clock.now_ms = local_ms(date(2027, 1, 5))
    december = running.service.publish(parse_period(PeriodKind.MONTH, "2026-12"), "request")
    page = render_report(december.content)
    assert "arrived for the previous period after its report (month-2026-11)" in page
    assert "<td>stop_line_crossings</td>" in page and "<td>5,000</td>" in page
    assert "<td>red_light_crossings</td>" not in page  # only the figures that changed
