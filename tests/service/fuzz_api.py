"""Generated requests to every route of a service, each with the key of the role it needs and
with the key of a role it refuses; exit 1 on any 5xx or a refused role let through.

Run as a separate process: the test process has loaded native libraries built with flush-to-
zero floating point, under which Hypothesis refuses to generate floats.

    python tests/service/fuzz_api.py URL EXAMPLES STATION_KEY OPERATOR_KEY ADMIN_KEY DIE_ID...

The API routes come from the OpenAPI document; the dashboard's pages and feedback form are
outside it and are generated here from their fields.
"""

from __future__ import annotations

import sys
from urllib.parse import quote

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PUBLIC = ("/healthz", "/readyz", "/metrics")
WRONG_ROLE_SHARE = 4  # a refused role is stopped before the body: a quarter of the examples
WRONG = {"station": "operator", "operator": "station", "admin": "operator"}


def needed_role(path: str) -> str | None:
    """The role a route admits (an admin key may call them all); None: public."""
    if path.startswith(PUBLIC):
        return None
    if path.startswith("/api/v1/admin"):
        return "admin"
    return "station" if path == "/api/v1/inspect" else "operator"


class Fuzz:
    def __init__(self, url: str, examples: int, keys: dict[str, str], die_ids: list[str]):
        self.url, self.examples, self.keys, self.die_ids = url, examples, keys, die_ids
        self.failures: list[str] = []
        self.calls = 0

    def check(self, label: str, status: int, text: str, refused_role: bool) -> None:
        self.calls += 1
        if status >= 500:
            self.failures.append(f"{label}: {status} {text[:200]}")
        elif refused_role and status < 400:
            self.failures.append(f"{label}: a refused role got {status}")

    def settings(self, refused: bool = False):
        examples = max(self.examples // WRONG_ROLE_SHARE, 1) if refused else self.examples
        checks = list(HealthCheck)
        return settings(max_examples=examples, deadline=None, suppress_health_check=checks)

    def api(self) -> int:
        """Every operation of the OpenAPI document, with the right and a wrong role."""
        schema = schemathesis.openapi.from_url(f"{self.url}/openapi.json")
        operations = [r.ok() for r in schema.get_all_operations()]
        for operation in operations:
            role = needed_role(operation.path)
            for key_role in (role or "station", WRONG.get(role)):
                if key_role is None:
                    continue
                self._api_operation(operation, key_role, refused_role=key_role != role and role)
        return len(operations)

    def _api_operation(self, operation, key_role: str, refused_role: bool) -> None:
        @given(case=operation.as_strategy())
        @self.settings(refused_role)
        def call(case):
            response = case.call(headers={"X-API-Key": self.keys[key_role]}, timeout=30)
            label = f"{case.method} {case.formatted_path} as {key_role}"
            self.check(label, response.status_code, response.text, refused_role)

        call()

    def dashboard(self) -> int:
        """The dashboard's pages and its feedback form, as the operator and as a station."""
        die_ids = st.one_of(st.sampled_from(self.die_ids), st.text(max_size=150))
        form = st.fixed_dictionaries(
            {
                "verdict": st.one_of(st.sampled_from(["confirm", "override"]), st.text()),
                "true_class": st.one_of(st.sampled_from(["", "0", "3", "9"]), st.text()),
                "comment": st.text(max_size=2500),
            }
        )
        pages = ["", "/dies/{}", "/dies/{}/image.png", "/dies/{}/heatmap.png"]
        pages += ["/wafers/{}", "/lots/{}", "/lots", "/find", "/find.csv", "/trends"]
        for role, refused in (("operator", False), ("station", True)):
            auth = ("user", self.keys[role])
            # as a browser does: a redirect (a trailing slash dropped) is judged where it leads
            with httpx.Client(
                base_url=self.url, auth=auth, timeout=30, follow_redirects=True
            ) as client:
                for page in pages:
                    self._page(client, page, die_ids, role, refused)
                self._form(client, die_ids, form, role, refused)
        return len(pages) + 1

    def _page(self, client, page: str, die_ids, role: str, refused: bool) -> None:
        @given(die_id=die_ids, show_all=st.sampled_from(["", "1", "0", "x"]))
        @self.settings(refused)
        def call(die_id, show_all):
            path = "/dashboard" + page.format(quote(die_id, safe=""))
            response = client.get(path, params={"all": show_all} if show_all else None)
            self.check(f"GET {path} as {role}", response.status_code, response.text, refused)

        call()

    def _form(self, client, die_ids, form, role: str, refused: bool) -> None:
        @given(die_id=die_ids, fields=form)
        @self.settings(refused)
        def call(die_id, fields):
            path = f"/dashboard/dies/{quote(die_id, safe='')}/feedback"
            response = client.post(path, data=fields, headers={"Origin": self.url})
            self.check(f"POST {path} as {role}", response.status_code, response.text, refused)

        call()


def main(argv: list[str]) -> int:
    url, examples, station, operator, admin, *die_ids = argv
    keys = {"station": station, "operator": operator, "admin": admin}
    fuzz = Fuzz(url, int(examples), keys, die_ids)
    routes = fuzz.api() + fuzz.dashboard()
    print(f"{routes} routes, {examples} examples each with its role, {fuzz.calls} calls")
    print("\n".join(fuzz.failures))
    print(f"{len(fuzz.failures)} server errors or refused roles let through")
    return 1 if fuzz.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
