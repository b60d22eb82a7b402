"""The console in a browser: it loads offline, signs in, follows the key's scopes and stays live."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.conftest import City
from tests.support.browser import WatchedPage, watched_page

pytestmark = pytest.mark.integration


def sign_in(watched: WatchedPage, url: str, key: str, view: str = "map") -> None:
    watched.page.goto(f"{url}/#/{view}")
    expect(watched.page.locator("#sign-in")).to_be_visible()
    watched.page.fill("#key", key)
    watched.page.click("#sign-in button[type=submit]")
    expect(watched.page.locator("#nav")).to_be_visible()


def test_the_console_loads_without_errors_or_requests_off_this_machine(browser: Browser, city: City) -> None:
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key)
        for view in ("map", "queue", "intersections", "dispatch", "stats"):
            watched.page.click(f"#nav a[data-view={view}]")
            expect(watched.page.locator(f"#nav a[data-view={view}]")).to_have_class("active")
            expect(watched.page.locator(".view[data-ready]")).to_have_count(1)
        expect(watched.page.locator("#live")).to_have_text("● live")
        watched.assert_clean()


def test_an_unknown_key_is_refused_and_the_key_is_kept_in_the_tab_only(browser: Browser, city: City) -> None:
    with watched_page(browser) as watched:
        page = watched.page
        page.goto(city.url)
        expect(page.locator("#sign-in")).to_be_visible()  # auth required: no request before a key
        page.fill("#key", "cw_nosuchkey_" + "x" * 43)
        page.click("#sign-in button[type=submit]")
        expect(page.locator("#sign-in-error")).to_have_text("This key is not valid.")
        page.fill("#key", city.admin_key)
        page.click("#sign-in button[type=submit]")
        expect(page.locator("#who")).to_have_text("key console-admin")
        assert page.evaluate("sessionStorage.getItem('citywatch.key')") == city.admin_key
        assert page.evaluate("localStorage.length") == 0
        assert not any(city.admin_key in c.get("value", "") for c in watched.context.cookies())
        page.click("#sign-out")
        expect(page.locator("#sign-in")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('citywatch.key')") is None


def test_a_key_without_the_plates_scope_sees_masked_plates_and_no_actions(browser: Browser,
                                                                          city: City) -> None:
    city.red_light("t-mask", "粤B12345")
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.reader_key, "queue")
        page = watched.page
        page.select_option("select[name=type]", "red_light")
        row = page.locator("#queue tbody tr").first
        expect(row).to_contain_text("red_light", timeout=10_000)
        row.click()
        expect(page.locator("#detail .plate")).to_have_text("粤B1****")
        expect(page.locator("#detail")).not_to_contain_text("nvr.example")
        expect(page.locator("#detail")).to_contain_text("hidden: the key lacks the plates scope")
        expect(page.locator("#detail .actions")).to_contain_text("Read only")
        expect(page.locator("#detail .actions button")).to_have_count(0)
        watched.assert_clean()
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "queue")
        page = watched.page
        page.select_option("select[name=type]", "red_light")
        page.locator("#queue tbody tr").first.click()
        expect(page.locator("#detail .plate")).to_have_text("粤B12345")
        expect(page.locator("#detail .signal")).to_contain_text("north_through red")
        expect(page.locator("#detail a", has_text="snapshot")).to_have_attribute(
            "href", "http://nvr.example/t-mask.jpg")
        for action in ("Acknowledge", "Dismiss as false", "Dispatch", "Close"):
            expect(page.locator("#detail .actions button", has_text=action)).to_have_count(1)
        watched.assert_clean()


def test_a_violation_published_over_mqtt_is_on_the_map_and_in_the_queue_within_2_s(
        browser: Browser, city: City) -> None:
    with watched_page(browser) as map_page, watched_page(browser) as queue_page:
        sign_in(map_page, city.url, city.admin_key, "map")
        sign_in(queue_page, city.url, city.admin_key, "queue")
        for watched in (map_page, queue_page):
            expect(watched.page.locator("#live")).to_have_text("● live")
        markers_before = int(map_page.page.locator("#map").get_attribute("data-violation-markers") or 0)
        city.overflow("bin-b1")
        published = time.monotonic()
        on_map = map_page.page.locator("#open-list tr[data-id]", has_text="bin-b1")
        in_queue = queue_page.page.locator("#queue tbody tr", has_text="bin-b1")
        expect(on_map).to_have_count(1, timeout=2000)
        expect(in_queue).to_have_count(1, timeout=2000)
        assert time.monotonic() - published < 2.0
        expect(map_page.page.locator("#map")).to_have_attribute("data-violation-markers",
                                                                 str(markers_before + 1))
        [stored] = city.api("/v1/violations", device="bin-b1", type="bin_overflow", status="open")["items"]
        for watched, rows in ((map_page, "#open-list tr"), (queue_page, "#queue tbody tr")):
            expect(watched.page.locator(f"{rows}[data-id='{stored['violation_id']}']")).to_have_count(1)
        city.send("bin-b1", "bin", int(time.time() * 1000) + 300, fill_pct=5.0)  # emptied: it clears
        expect(on_map).to_have_count(0, timeout=2000)
        expect(map_page.page.locator("#map")).to_have_attribute("data-violation-markers", str(markers_before))
        map_page.assert_clean()
        queue_page.assert_clean()


def test_filters_change_the_list(browser: Browser, city: City) -> None:
    city.overflow("bin-b2")
    city.red_light("t-filter", "粤B77777")
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "queue")
        page = watched.page
        rows = page.locator("#queue tbody tr")
        page.select_option("select[name=status]", "")
        page.select_option("select[name=type]", "red_light")
        expect(rows.first).to_be_visible()
        expect(rows.filter(has_not_text="red_light")).to_have_count(0)
        page.select_option("select[name=type]", "bin_overflow")
        expect(rows.filter(has_text="bin-b2")).to_have_count(1)
        expect(rows.filter(has_not_text="bin_overflow")).to_have_count(0)
        page.fill("input[name=grid]", "FT-99")
        expect(rows).to_have_count(0)
        page.fill("input[name=grid]", "FT-11")
        expect(rows.filter(has_text="bin-b2")).to_have_count(1)
        page.fill("input[name=grid]", "")
        page.select_option("select[name=severity]", "high")
        expect(rows.filter(has_text="bin-b2")).to_have_count(0)
        watched.assert_clean()


def test_violations_stored_while_the_connection_was_down_appear_after_it_returns(
        browser: Browser, city: City) -> None:
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "queue")
        page = watched.page
        live = page.locator("#live")
        rows = page.locator("#queue tbody tr")
        expect(live).to_have_text("● live")
        city.overflow("bin-b3")  # received live: the page now has a position in the feed
        expect(rows.filter(has_text="bin-b3")).to_have_count(1, timeout=2000)
        list_reads: list[str] = []
        page.on("request", lambda r: list_reads.append(r.url) if "/v1/violations?" in r.url else None)

        # The network goes away: the browser says so (offline), and the stream cannot be reopened until
        # it is back (new stream requests fail).
        watched.context.route("**/v1/stream/violations*", lambda route: route.abort("internetdisconnected"))
        watched.context.set_offline(True)
        expect(live).to_have_text("○ reconnecting", timeout=5000)
        city.overflow("bin-b4")
        city.send("bin-b3", "bin", int(time.time() * 1000), fill_pct=5.0)  # emptied: its violation clears
        [opened] = wait_until_stored(city, "bin-b4")
        expect(rows.filter(has_text="bin-b4")).to_have_count(0)
        watched.context.unroute("**/v1/stream/violations*")
        watched.context.set_offline(False)

        expect(live).to_have_text("● live", timeout=10_000)
        expect(page.locator(f"#queue tbody tr[data-id='{opened['violation_id']}']")).to_have_count(1)
        expect(rows.filter(has_text="bin-b3")).to_have_count(0)  # the clearing was not missed either
        # Resumed from the last id received (Last-Event-ID): the list was not read again.
        assert list_reads == []
        # Chromium logs each reconnect that failed while offline; nothing else may be logged.
        watched.console_errors = [error for error in watched.console_errors
                                  if "net::ERR_INTERNET_DISCONNECTED" not in error]
        watched.assert_clean()


def wait_until_stored(city: City, device: str, type: str = "bin_overflow") -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        items: list[dict[str, object]] = city.api("/v1/violations", device=device, type=type,
                                                  status="open")["items"]
        if items:
            return items
        time.sleep(0.1)
    raise AssertionError(f"no open violation of {device} was stored")


def test_the_dispatch_list_orders_bins_as_the_predictions_api_does(browser: Browser, city: City) -> None:
    city.filling("bin-b5", 92.0, 1.0)  # over 90% twice in a row: overflowing
    city.filling("bin-b6", 60.0, 4.0)
    city.filling("bin-b7", 20.0, 0.5)
    predicted = wait_for_predictions(city, {"bin-b5", "bin-b6", "bin-b7"})
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "dispatch")
        page = watched.page
        expect(page.locator(".view[data-ready]")).to_have_count(1)
        shown = page.locator("#bins-to-empty tbody tr[data-device]")
        expect(shown).to_have_count(len(predicted))
        assert [row.get_attribute("data-device") for row in shown.all()] == predicted
        # The overflowing bin first, then the one filling fastest.
        assert predicted.index("bin-b5") < predicted.index("bin-b6") < predicted.index("bin-b7")
        expect(page.locator("#bins-to-empty tr[data-device='bin-b5'] td").nth(4)).to_have_text("overflowing")
        with page.expect_download() as download:
            page.click("#csv")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0].startswith("rank,device_id,fill_pct,predicted_full_local")
        assert [line.split(",")[1] for line in lines[1:]] == predicted
        page.emulate_media(media="print")
        expect(page.locator("header.top")).to_be_hidden()
        expect(page.locator("#bins-to-empty")).to_be_visible()
        watched.assert_clean()


def wait_for_predictions(city: City, devices: set[str]) -> list[str]:
    """The bins in the order of /v1/bins/predictions, once `devices` have a forecast and the order has
    stopped changing (the last readings may still be on their way through the rules)."""
    deadline = time.monotonic() + 15
    previous: list[str] = []
    while time.monotonic() < deadline:
        items = city.api("/v1/bins/predictions")["items"]
        order = [p["device_id"] for p in items]
        ready = {p["device_id"] for p in items if p["predicted_full_time_ms"] is not None}
        if devices <= ready and order == previous:
            return order
        previous = order
        time.sleep(0.5)
    raise AssertionError(f"no steady forecast for {devices}")


def test_the_intersection_view_shows_approaches_phases_and_device_health(browser: Browser,
                                                                         city: City) -> None:
    # Only this test changes the east phase (the red-light tests turn north red).
    city.signal_changes((90, "east_through", "green"), (60, "east_through", "amber"),
                        (57, "east_through", "red"))
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "intersections")
        page = watched.page
        expect(page.locator("#intersection")).to_have_value("ix-demo")
        expect(page.locator("#approaches tr[data-approach]")).to_have_count(2)
        expect(page.locator("#approaches tr[data-approach='north'] td").nth(1)).to_have_text("north_through")
        east = page.locator("#signal-timeline .row[data-phase='east_through'] .seg")
        expect(east).to_have_count(3)
        assert [s.get_attribute("class") for s in east.all()] == ["seg green", "seg amber", "seg red"]
        expect(page.locator("#health tr[data-device='sig-ix-demo'] td").nth(3)).to_have_text("reporting")
        expect(page.locator("#health tr[data-device='cam-ix-demo']")).to_have_count(1)
        watched.assert_clean()


def test_the_control_room_acknowledges_dispatches_and_closes_from_the_queue(browser: Browser,
                                                                            city: City) -> None:
    city.overflow("bin-b6")
    [violation] = wait_until_stored(city, "bin-b6")
    violation_id = str(violation["violation_id"])
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, f"queue?violation={violation_id}")
        page = watched.page
        row = page.locator(f"#queue tbody tr[data-id='{violation_id}']")
        actions = page.locator("#detail .actions")
        expect(row).to_have_class("selected")
        actions.get_by_role("button", name="Acknowledge").click()
        expect(row.locator("td").nth(7)).to_have_text("acknowledged")
        expect(actions.get_by_role("button", name="Acknowledge")).to_be_disabled()
        expect(page.locator("#detail")).to_contain_text("acknowledged")  # in the history
        actions.get_by_role("button", name="Dispatch").click()
        expect(page.locator("#detail .evidence")).to_contain_text("dispatched · sanitation")
        expect(row.locator("td").nth(7)).to_have_text("acknowledged → sanitation")
        [case] = city.api("/v1/cases", violation=violation_id)["items"]  # a case made for it links it
        assert (case["state"], case["department"]) == ("dispatched", "sanitation")
        page.on("dialog", lambda dialog: dialog.accept("lid sensor fault"))
        actions.get_by_role("button", name="Dismiss as false").click()
        expect(row.locator("td").nth(7)).to_have_text("dismissed")
        history = city.api(f"/v1/violations/{violation_id}/history")["entries"]
        assert [(e["change"], e["note"]) for e in history if e["change"] == "dismissed"] == [
            ("dismissed", "lid sensor fault")]
        watched.assert_clean()


def test_a_device_popup_has_its_latest_reading_open_violations_and_a_sparkline(browser: Browser,
                                                                              city: City) -> None:
    now_ms = int(time.time() * 1000)
    for minutes_ago, fill in ((3, 40.0), (2, 60.0), (1, 80.0)):  # stored for the sparkline
        city.send("bin-b8", "bin", now_ms - minutes_ago * 60_000, fill_pct=fill)
    city.overflow("bin-b8")
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "map")
        page = watched.page
        expect(page.locator(".view[data-ready]")).to_have_count(1)
        page.locator("#open-list tr[data-id]", has_text="bin-b8").first.click()
        popup = page.locator(".leaflet-popup-content .popup")
        expect(popup.locator("h4")).to_have_text("bin-b8")
        expect(popup.locator("table.reading")).to_contain_text("fill_pct")
        expect(popup.locator(".open a", has_text="bin_overflow")).to_have_count(1)
        expect(popup.locator(".spark canvas")).to_have_count(1)
        expect(popup.locator(".spark")).to_contain_text("fill_pct, mean per minute, last 6 h")
        # The demo intersection is drawn where its tagged camera is (traffic.cameras names it).
        expect(page.locator("#map")).to_have_attribute("data-intersections", "1")
        watched.assert_clean()


def test_statistics_link_the_published_reports_printable_page_and_csv(browser: Browser, city: City) -> None:
    published = httpx.post(city.url + "/v1/reports", json={"period_kind": "month", "period_key": "2026-01"},
                           headers={"Authorization": f"Bearer {city.admin_key}"}, timeout=30)
    assert published.status_code in (200, 201), published.text
    with watched_page(browser) as watched:
        sign_in(watched, city.url, city.admin_key, "stats")
        page = watched.page
        row = page.locator("#reports tr[data-report='month-2026-01']")
        expect(row).to_contain_text("month 2026-01")
        with page.expect_popup() as opened:
            row.get_by_role("link", name="printable page").click()
        report_page = opened.value
        report_page.wait_for_load_state()
        expect(report_page.locator("body")).to_contain_text("2026-01")
        with page.expect_download() as downloaded:
            row.get_by_role("link", name="CSV").click()
        assert downloaded.value.suggested_filename == "month-2026-01.csv"
        watched.assert_clean()
