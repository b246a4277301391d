"""The operator dashboard over the real service: pages in Chromium, feedback, auth, CSRF."""

from __future__ import annotations

import base64

import httpx
import pytest

from model.schema import CLASS_NAMES
from service.inspection_log import LogUnavailableError
from service.pages import templates
from tests.service.conftest import KEYS

OPERATOR_NAME = "operator-1"  # the operator key's holder in the live_service fixture


def basic(key: str) -> dict:
    token = base64.b64encode(f"op:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def inspect(service, die) -> dict:
    data, files = die.form()
    with service.client("station") as client:
        response = client.post("/api/v1/inspect", data=data, files=files)
    assert response.status_code == 200, response.text
    return response.json()


def page_client(service, key: str = KEYS["operator"]) -> httpx.Client:
    return httpx.Client(base_url=service.url, headers=basic(key), timeout=30.0)


def stored_feedback(service, die_id: str) -> list[dict]:
    rows = service.app.state.service.log.feedback(latest_only=False)
    return [r for r in rows if r["die_id"] == die_id]


@pytest.fixture
def page(browser):
    credentials = {"username": "op", "password": KEYS["operator"]}
    context = browser.new_context(http_credentials=credentials)
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def inspected(live_service, dies) -> list[dict]:
    """Three dies inspected through the API, as the station got them back."""
    return [inspect(live_service, die) for die in dies[-3:]]


def test_an_operator_reviews_a_die_and_overrides_it(live_service, inspected, page):
    page.goto(f"{live_service.url}/dashboard")
    if not all(body["flagged"] for body in inspected):
        page.click("text=Show all dies")
    listed = page.inner_text("#dies")
    for body in inspected:
        assert body["die_id"] in listed

    die = inspected[0]
    page.click(f"a:text-is('{die['die_id']}')")
    page.wait_for_load_state("load")
    assert page.url.endswith(f"/dashboard/dies/{die['die_id']}")
    for image in ("#die-image", "#heatmap"):
        assert page.eval_on_selector(image, "img => img.complete && img.naturalWidth") == 256
    assert page.inner_text("#explanation") == die["explanation"]
    assert CLASS_NAMES[die["defect_class"]].replace("_", " ") in page.inner_text("#class")

    true_class = next(c for c in range(1, len(CLASS_NAMES)) if c != die["defect_class"])
    override(page, true_class, "edge chipping, not a particle")
    assert page.inner_text("#notice") == "Feedback recorded"
    assert "edge chipping" in page.inner_text("#feedback")
    (row,) = stored_feedback(live_service, die["die_id"])
    assert row["verdict"] == "override" and row["true_class"] == true_class
    assert row["label"] == true_class and row["operator"] == OPERATOR_NAME
    assert row["inspection_id"] == die["inspection_id"]

    override(page, true_class, "edge chipping, not a particle")
    assert page.inner_text("#notice") == "This feedback was already recorded"
    assert len(stored_feedback(live_service, die["die_id"])) == 1


def override(page, true_class: int, comment: str) -> None:
    page.select_option("#true_class", str(true_class))
    page.fill("input[name=comment]", comment)
    with page.expect_navigation():
        page.click("button:text-is('Override')")


def test_an_override_without_a_class_is_sent_back(live_service, inspected, page):
    die_id = inspected[1]["die_id"]
    page.goto(f"{live_service.url}/dashboard/dies/{die_id}")
    with page.expect_navigation() as navigation:
        page.click("button:text-is('Override')")
    assert navigation.value.status == 422
    assert "needs the true class" in page.inner_text("#error")
    assert stored_feedback(live_service, die_id) == []


def test_a_confirm_from_the_form_keeps_the_class(live_service, inspected):
    die = inspected[2]
    with page_client(live_service) as client:
        path = f"/dashboard/dies/{die['die_id']}/feedback"
        response = client.post(path, data={"verdict": "confirm"})
    assert response.status_code == 303
    assert response.headers["location"].endswith("?notice=recorded")
    (row,) = stored_feedback(live_service, die["die_id"])
    assert row["verdict"] == "confirm" and row["label"] == die["defect_class"]


def test_the_die_page_shows_every_part(live_service, inspected):
    die = inspected[1]
    with page_client(live_service) as client:
        html = client.get(f"/dashboard/dies/{die['die_id']}").text
    for part in ("Anomalous process parameters", "Missing parameters", "Operator note"):
        assert part in html
    assert 'id="decisions"' in html and "champion" in html
    assert 'id="similar"' in html or 'id="similar-note"' in html
    assert f"v{die['model_version']}" in html


@pytest.mark.parametrize("picture", ["image.png", "heatmap.png"])
def test_the_pictures_are_pngs_of_the_die(live_service, inspected, picture):
    with page_client(live_service) as client:
        response = client.get(f"/dashboard/dies/{inspected[0]['die_id']}/{picture}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_pages_need_an_operator_key(live_service, inspected):
    with httpx.Client(base_url=live_service.url) as client:
        response = client.get("/dashboard")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    for key in (KEYS["station"], "not-a-key"):
        with page_client(live_service, key) as client:
            assert client.get("/dashboard").status_code in (401, 403)
    with page_client(live_service, KEYS["admin"]) as client:
        assert client.get("/dashboard?all=1").status_code == 200


@pytest.mark.parametrize("path", ["", "/image.png", "/heatmap.png"])
def test_an_unknown_die_is_404(live_service, path):
    with page_client(live_service) as client:
        response = client.get(f"/dashboard/dies/Z-NOT-A-DIE{path}")
    assert response.status_code == 404
    if not path:
        assert "Unknown die" in response.text


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Referer": "http://127.0.0.1:1/dashboard"}],
)
def test_a_post_from_another_origin_is_refused(live_service, inspected, headers):
    die_id = inspected[1]["die_id"]
    form = {"verdict": "override", "true_class": "2", "comment": "cross-site"}
    with page_client(live_service) as client:
        response = client.post(f"/dashboard/dies/{die_id}/feedback", data=form, headers=headers)
    assert response.status_code == 403
    assert not [r for r in stored_feedback(live_service, die_id) if r["comment"] == "cross-site"]


def test_a_log_outage_says_the_feedback_was_not_stored(live_service, inspected, monkeypatch):
    def outage(*args, **kwargs):
        raise LogUnavailableError("feedback not stored: OperationalError: database is locked")

    monkeypatch.setattr(live_service.app.state.service.log, "add_feedback", outage)
    die_id = inspected[1]["die_id"]
    with page_client(live_service) as client:
        response = client.post(f"/dashboard/dies/{die_id}/feedback", data={"verdict": "confirm"})
    assert response.status_code == 503
    assert "not stored" in response.text


def test_the_list_toggles_between_flagged_and_all_dies(live_service, inspected):
    with page_client(live_service) as client:
        everything = client.get("/dashboard?all=1").text
        flagged = client.get("/dashboard").text
    assert all(body["die_id"] in everything for body in inspected)
    assert "Show flagged dies only" in everything and "Show all dies" in flagged
    if not any(body["flagged"] for body in inspected):
        assert all(body["die_id"] not in flagged for body in inspected)


@pytest.mark.parametrize(
    ("show_all", "text"),
    [(False, "No flagged dies."), (True, "No dies have been inspected yet.")],
)
def test_an_empty_list_says_so(show_all, text):
    html = templates.get_template("index.html").render(
        operator=OPERATOR_NAME, rows=[], show_all=show_all, limit=200
    )
    assert text in html and 'id="dies"' not in html
