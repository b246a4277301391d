"""Post generated requests from a service's OpenAPI document; exit 1 on any 5xx.

Run as a separate process: the test process has loaded native libraries built with flush-to-
zero floating point, under which Hypothesis refuses to generate floats.

    python tests/service/fuzz_api.py URL API_KEY EXAMPLES
"""

from __future__ import annotations

import sys

import schemathesis
from hypothesis import HealthCheck, given, settings


def fuzz(url: str, key: str, examples: int) -> list[str]:
    """The failures (method, path, status, body) of generated calls to every non-admin route."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    failures: list[str] = []
    operations = [r.ok() for r in schema.get_all_operations() if "/admin/" not in r.ok().path]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case):
            response = case.call(headers={"X-API-Key": key}, timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.path}: {response.status_code} {response.text[:200]}"
                )

        call()
    print(f"{len(operations)} routes, {examples} examples each, {len(failures)} server errors")
    return failures


if __name__ == "__main__":
    found = fuzz(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("\n".join(found))
    sys.exit(1 if found else 0)
