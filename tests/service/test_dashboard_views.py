"""The dashboard's views over a seeded log, in Chromium: wafer and lot maps, find a die with
every filter, paging and CSV export, and trends; over HTTP: sign-in, bad filters, 404s."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from model.schema import CLASS_NAMES
from service.bench_dashboard import OPERATOR_KEY, bench_config, views_app
from service.embedded import serve_in_thread
from service.wafer_map import PALETTE
from tests.service import views_seed as seed


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    """The seeded fab, its dashboard served on loopback (url, fab)."""
    fab = seed.seed_fab(tmp_path_factory.mktemp("views"))
    url, stop = serve_in_thread(views_app(fab.config))
    yield url, fab
    stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(
        http_credentials={"username": "op", "password": OPERATOR_KEY},
        viewport={"width": 1400, "height": 1000},
        device_scale_factor=1,
        accept_downloads=True,
    )
    yield context.new_page()
    context.close()


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def listed_dies(page) -> list[str]:
    if not page.query_selector("#dies"):
        return []
    return page.eval_on_selector_all(
        "#dies tbody tr td:nth-child(2)", "cs => cs.map(c => c.innerText)"
    )


def test_the_wafer_map_draws_each_die_once_in_its_class_colour(fab, page):
    url, fab = fab
    latest = fab.latest(seed.W01)
    placed = {d: r for d, r in latest.items() if "die_x" in r["metadata"]}
    page.goto(f"{url}/dashboard/wafers/{seed.W01}")
    cells = page.query_selector_all("#wafer rect.die")
    assert len(cells) == len(placed) == 9
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    for cell in cells:
        record = placed[cell.get_attribute("data-die")]
        box = cell.bounding_box()
        x, y = round(box["x"]), round(box["y"])
        assert shot.getpixel((x + 3, y + 3)) == rgb(PALETTE[record["class_name"]]), record["die_id"]
        edge = shot.getpixel((x, y + round(box["height"]) // 2))
        assert (max(edge) < 60) == record["flagged"], record["die_id"]  # black outline
    reinspected = page.get_attribute(f"rect[data-die='{seed.REINSPECTED}']", "data-class")
    assert reinspected == "scratch"
    assert "1 die has no usable position" in page.inner_text("#legend")
    assert all(name.replace("_", " ") in page.inner_text("#legend") for name in CLASS_NAMES)
    counts = page.inner_text("#counts")
    assert re.search(r"confirmed\s+1\b", counts) and re.search(r"overridden\s+1\b", counts)


def test_a_die_of_the_map_opens_its_page(fab, page):
    url, _ = fab
    page.goto(f"{url}/dashboard/wafers/{seed.W01}")
    with page.expect_navigation():
        page.click(f"rect[data-die='{seed.CONFIRMED}']")
    assert urlsplit(page.url).path == f"/dashboard/dies/{seed.CONFIRMED}"
    assert page.inner_text("h1") == seed.CONFIRMED


def test_the_lot_view_shows_its_wafers_side_by_side_with_counts(fab, page):
    url, fab = fab
    page.goto(f"{url}/dashboard/lots")
    assert "L0001" in page.inner_text("#lots") and "L0003" in page.inner_text("#lots")
    page.click("a:text-is('L0001')")
    wafers = page.eval_on_selector_all("figure.wafer", "fs => fs.map(f => f.dataset.wafer)")
    assert wafers == [seed.W01, seed.W02]
    assert len(page.query_selector_all("figure.wafer rect.die")) == 9 + 4
    dies = len(seed.fab_records(fab.now)) - 60 - 1  # W03 is another lot; D04 counted once
    assert f"2 wafers, {dies} dies" in page.inner_text(".toolbar")
    page.click(f"a:text-is('{seed.W02}')")
    assert urlsplit(page.url).path == f"/dashboard/wafers/{seed.W02}"


def _expected(fab, keep) -> list[str]:
    rows = sorted(fab.records, key=lambda r: r["received_at"], reverse=True)
    return [r["die_id"] for r in rows if keep(r)]


FEEDBACK = {seed.CONFIRMED: "confirmed", seed.OVERRIDDEN: "overridden"}
FILTERS = {  # field, value, which records it keeps
    "wafer": ("input[name=wafer]", seed.W02, lambda r: r["wafer_id"] == seed.W02),
    "lot": ("input[name=lot]", "L0001", lambda r: r["metadata"]["lot_id"] == "L0001"),
    "fab": ("input[name=fab]", "C", lambda r: r["metadata"]["fab"] == "C"),
    "chamber": ("input[name=chamber]", "A-CH2", lambda r: r["metadata"]["chamber"] == "A-CH2"),
    "class": ("select[name=class]", "scratch", lambda r: r["class_name"] == "scratch"),
    "flagged": ("select[name=flagged]", "yes", lambda r: r["flagged"]),
    "feedback": ("select[name=feedback]", "overridden", lambda r: r["die_id"] == seed.OVERRIDDEN),
    "die": ("input[name=die]", "w01-d0", lambda r: "-W01-D0" in r["die_id"]),
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_each_filter_finds_its_dies_and_keeps_them_in_the_url(fab, page, name):
    url, fab = fab
    field, value, keep = FILTERS[name]
    page.goto(f"{url}/dashboard/find")
    if field.startswith("select"):
        page.select_option(field, value)
    else:
        page.fill(field, value)
    with page.expect_navigation():
        page.click("button:text-is('Find')")
    assert parse_qs(urlsplit(page.url).query)[name] == [value]
    expected = _expected(fab, keep)[:50]  # the first page
    assert listed_dies(page) == expected and expected
    shared = page.url
    page.goto(f"{url}/dashboard/find")
    page.goto(shared)  # the link alone brings the same view back
    assert listed_dies(page) == expected
    assert page.input_value(field) == value


def test_a_time_range_and_the_pages_of_a_long_table(fab, page):
    url, fab = fab
    start = (fab.now - timedelta(hours=30, minutes=1)).replace(second=0)
    end = (fab.now - timedelta(hours=24)).replace(second=0)
    page.goto(f"{url}/dashboard/find")
    page.fill("input[name=start]", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=end]", end.strftime("%Y-%m-%dT%H:%M"))
    with page.expect_navigation():
        page.click("button:text-is('Find')")
    within = _expected(fab, lambda r: start <= r["received_at"] < end)
    assert listed_dies(page) == within and len(within) == 14
    page.goto(f"{url}/dashboard/find")
    everything = _expected(fab, lambda r: True)
    assert page.inner_text("#total").startswith(f"{len(everything)} dies match")
    first = listed_dies(page)
    assert first == everything[:50] and "page 1 of 2" in page.inner_text("#pager")
    page.click("#next")
    assert listed_dies(page) == everything[50:] and "page=2" in page.url
    page.click("#previous")
    assert listed_dies(page) == first


def test_the_csv_export_holds_every_die_of_the_filter(fab, page):
    url, fab = fab
    page.goto(f"{url}/dashboard/find?lot=L0001&flagged=yes")
    with page.expect_download() as download:
        page.click("#csv")
    with open(download.value.path(), encoding="utf-8") as text:
        rows = list(csv.DictReader(text))
    keep = lambda r: r["metadata"]["lot_id"] == "L0001" and r["flagged"]  # noqa: E731
    assert [r["die_id"] for r in rows] == _expected(fab, keep)
    by_die = {r["die_id"]: r for r in rows}
    assert by_die[seed.CONFIRMED]["feedback"] == "confirmed"
    assert by_die[seed.UNPLACED]["die_x"] == "" and by_die[seed.CONFIRMED]["die_x"] == "0"


def test_the_trends_page_plots_figures_events_and_drift(fab, page):
    url, fab = fab
    page.goto(f"{url}/dashboard/trends")
    assert page.query_selector("#trend-chart") is not None
    events = page.inner_text("#events")
    assert "v2 rollout: shadow" in events and "v2 promoted to champion" in events
    assert len(page.query_selector_all("#trend-chart line.event")) == len(
        page.query_selector_all("#events tbody tr")
    )
    days = {r["received_at"].date() for r in fab.records}
    assert len(page.query_selector_all("#figures tbody tr")) == len(days)  # 7 days: by day
    assert page.query_selector_all("#trend-chart rect.drifted")
    assert "drifted" in page.inner_text("#figures")
    page.select_option("select[name=bucket]", "hour")
    with page.expect_navigation():
        page.click("button:text-is('Show')")
    assert "bucket=hour" in page.url
    hours = Counter(r["received_at"].replace(minute=0, second=0) for r in fab.records)
    flagged = Counter(r["received_at"].replace(minute=0, second=0) for r in fab.records
                      if r["flagged"])  # fmt: skip
    rows = page.eval_on_selector_all(
        "#figures tbody tr", "rs => rs.map(r => [...r.cells].slice(1, 3).map(c => c.innerText))"
    )
    expected = [(n, flagged[h] / n) for h, n in sorted(hours.items())]
    assert [(int(n), rate.split("%")[0]) for n, rate in rows] == [
        (n, f"{100 * share:.1f}") for n, share in expected
    ]


def client(url: str, key: str | None = OPERATOR_KEY) -> httpx.Client:
    auth = ("op", key) if key else None
    return httpx.Client(base_url=url, auth=auth, timeout=30)


PAGES = ["/dashboard/find", "/dashboard/find.csv", "/dashboard/lots", "/dashboard/trends",
         "/dashboard/lots/L0001", f"/dashboard/wafers/{seed.W01}"]  # fmt: skip


@pytest.mark.parametrize("path", PAGES)
def test_every_view_needs_an_operator_key(fab, path):
    url, _ = fab
    with client(url, key=None) as anonymous:
        assert anonymous.get(path).status_code == 401
    with client(url, key="not-a-key") as stranger:
        assert stranger.get(path).status_code == 401
    with client(url) as operator:
        assert operator.get(path).status_code == 200


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("/dashboard/find?class=crack", "class must be one of"),
        ("/dashboard/find?flagged=maybe", "flagged must be one of"),
        ("/dashboard/find?feedback=ignored", "feedback must be one of"),
        ("/dashboard/find?start=yesterday", "is not a date or time"),
        ("/dashboard/find?start=2026-02-02&end=2026-02-01", "ends before it starts"),
        ("/dashboard/find?page=0", "page must be a whole number"),
        ("/dashboard/find.csv?page=x", "page must be a whole number"),
        ("/dashboard/find?wafer=" + "W" * 201, "longer than 200"),
        ("/dashboard/trends?bucket=week", "bucket must be one of"),
        ("/dashboard/trends?start=2020-01-01&bucket=hour", "more than 2000 hours"),
    ],
)
def test_a_filter_that_cannot_be_used_is_a_400_with_the_reason(fab, query, reason):
    url, _ = fab
    with client(url) as operator:
        response = operator.get(query)
    assert response.status_code == 400
    assert reason in response.text


@pytest.mark.parametrize("path", ["/dashboard/wafers/NO-SUCH-WAFER", "/dashboard/lots/L9999"])
def test_an_unknown_wafer_or_lot_is_404(fab, path):
    url, _ = fab
    with client(url) as operator:
        response = operator.get(path)
    assert response.status_code == 404 and "Unknown" in response.text


def test_a_page_past_the_last_says_so(fab):
    url, _ = fab
    with client(url) as operator:
        response = operator.get("/dashboard/find?page=9")
    assert response.status_code == 200 and "past the last page (2)" in response.text


@pytest.mark.parametrize("path", ["/dashboard/find", "/dashboard/lots", "/dashboard/trends"])
def test_an_unreachable_log_is_a_503_page(tmp_path, path):
    config = bench_config(tmp_path).with_changes(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere"
    )
    url, stop = serve_in_thread(views_app(config))
    try:
        with client(url) as operator:
            response = operator.get(path)
    finally:
        stop()
    assert response.status_code == 503 and "Inspection log unavailable" in response.text
