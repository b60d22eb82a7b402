"""The indices API over a generated month: index and ranking answers with their method version, reports
published on request once (201, then 200 with the same body), read as JSON, CSV and a printable page, and
citywatch's own problems for a running period, a bad period key, an unknown index or report."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.access.keys import Scope
from core.index_settings import IndexSettings, PeriodKind
from processors.indices.periods import parse_period
from processors.indices.service import IndexService
from tests.support.alerts import AlertApi, alert_api, bearer
from tests.support.indices import TIME_ZONE, generate, local_ms


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertApi]:
    api = alert_api(tmp_path_factory.mktemp("indices-api"))
    city = generate(date(2026, 10, 1), date(2026, 11, 30), districts=3, grids=2, intersections=2,
                    quiet=("x-d1-g1-1",), with_cases=False)
    api.store.write_exposures(city.exposure_totals())
    api.store.flush()
    assert api.services.indices is not None
    api.services.indices = IndexService(IndexSettings(), TIME_ZONE, api.store,
                                        reports=api.services.indices.reports,
                                        now_ms=lambda: local_ms(date(2026, 12, 10)))
    yield api
    api.close()


@pytest.fixture(scope="module")
def client(api: AlertApi) -> TestClient:
    return api.client()


@pytest.fixture(scope="module")
def reader(api: AlertApi) -> dict[str, str]:
    return bearer(api.key(Scope.INDICES_READ))


@pytest.fixture(scope="module")
def publisher(api: AlertApi) -> dict[str, str]:
    return bearer(api.key(Scope.REPORTS_WRITE, Scope.INDICES_READ))


def test_an_index_answer_shows_each_place_with_its_components_and_the_method(
        api: AlertApi, client: TestClient, reader: dict[str, str]) -> None:
    answer = client.get("/v1/indices/traffic/month/2026-11?level=district", headers=reader).json()
    assert answer["method_version"] == IndexSettings().method_version
    assert (answer["period"]["first_day"], answer["period"]["last_day"]) == ("2026-11-01", "2026-11-30")
    assert [place["place"] for place in answer["places"]] == ["d0", "d1", "d2"]
    assert api.services.indices is not None
    computed = api.services.indices.figures(parse_period(PeriodKind.MONTH, "2026-11"))["traffic"]
    d1 = answer["places"][1]
    assert d1["score"] == computed.levels["district"]["d1"].score
    assert [c["name"] for c in d1["components"]] == ["red_light", "yield_crosswalk", "no_helmet", "speeding",
                                                     "illegal_parking"]
    red = d1["components"][0]
    assert red["rate"] == red["numerator"] / red["denominator"] and red["min_volume"] == 30 * 1000
    assert d1["rank"] == computed.rankings["district"].by_place()["d1"].rank


def test_a_ranking_lists_a_quiet_intersection_unranked(client: TestClient, reader: dict[str, str]) -> None:
    answer = client.get("/v1/rankings/traffic/week/2026-W47?level=intersection", headers=reader).json()
    assert answer["previous_period"]["key"] == "2026-W46"
    assert [(p["place"], p["reason"]) for p in answer["unranked"]] == [("x-d1-g1-1", "no_score")]
    assert [p["rank"] for p in answer["ranked"]] == sorted(p["rank"] for p in answer["ranked"])
    assert len(answer["ranked"]) == 11 and len(answer["most_improved"]) <= 3


def test_a_report_is_published_once_and_read_in_three_forms(client: TestClient, reader: dict[str, str],
                                                            publisher: dict[str, str]) -> None:
    body = {"period_kind": "month", "period_key": "2026-10"}
    assert client.post("/v1/reports", json=body, headers=reader).status_code == 403
    first = client.post("/v1/reports", json=body, headers=publisher)
    assert first.status_code == 201
    again = client.post("/v1/reports", json=body, headers=publisher)
    assert again.status_code == 200 and again.json() == first.json()
    report = first.json()
    assert client.get("/v1/reports/month-2026-10", headers=reader).json() == report
    listed = client.get("/v1/reports", headers=reader).json()["items"]
    assert [(item["report_id"], item["links"]["html"]) for item in listed] == [
        ("month-2026-10", "/v1/reports/month-2026-10.html")]

    as_csv = client.get("/v1/reports/month-2026-10.csv", headers=reader)
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    d0 = next(p for p in report["indices"]["traffic"]["levels"]["district"] if p["place"] == "d0")
    row = next(r for r in rows if (r["index"], r["level"], r["place"]) == ("traffic", "district", "d0"))
    assert (float(row["score"]), row["grade"]) == (d0["score"], d0["grade"])

    page = client.get("/v1/reports/month-2026-10.html", headers=reader)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "@media print" in page.text and "<script" not in page.text
    assert report["method_version"] in page.text
    assert f"<td>d0</td><td>{d0['score']:,.2f}</td>" in page.text


def test_a_running_period_is_not_published(client: TestClient, publisher: dict[str, str]) -> None:
    response = client.post("/v1/reports", json={"period_kind": "month", "period_key": "2026-12"},
                           headers=publisher)
    assert response.status_code == 409
    assert response.json()["type"] == "urn:citywatch:problem:period-not-ended"


def test_wrong_names_get_citywatch_problems(client: TestClient, reader: dict[str, str],
                                            publisher: dict[str, str]) -> None:
    bad_key = client.get("/v1/indices/traffic/month/2026-13", headers=reader)
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["message"] == "'2026-13' is not a month (like '2026-11')"
    unknown = client.get("/v1/indices/noise/month/2026-11", headers=reader)
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no index named 'noise'; defined: sanitation, traffic"
    missing = client.get("/v1/reports/month-2020-01", headers=reader)
    assert missing.status_code == 404 and missing.json()["detail"] == "no report 'month-2020-01' has been " \
                                                                       "published"
    assert client.post("/v1/reports", json={"period_kind": "quarter", "period_key": "2026-11"},
                       headers=publisher).status_code == 422


def test_without_the_service_the_routes_answer_503(tmp_path: Path) -> None:
    bare = alert_api(tmp_path)
    assert bare.services.indices is not None and bare.services.indices.reports is not None
    bare.services.indices.reports.close()
    bare.services.indices = None
    response = bare.client().get("/v1/indices", headers=bearer(bare.key(Scope.INDICES_READ)))
    assert response.status_code == 503
    assert response.json()["detail"] == "indices are not available in this instance"
    bare.close()
