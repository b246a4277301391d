"""What every dashboard page shares: the templates, the operator sign-in, security headers,
and the page and error-page responses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from service.auth import require_browser
from service.config import OPERATOR, ApiKey

templates = Jinja2Templates(directory=Path(__file__).resolve().parent / "templates")
templates.env.filters["label"] = lambda name: str(name).replace("_", " ")
templates.env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M:%S") if t else ""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
Operator = Annotated[ApiKey, Depends(require_browser(OPERATOR))]


def page(request: Request, holder: ApiKey, name: str, context: dict, status: int = 200):
    """A rendered template with the signed-in operator's name and the security headers."""
    response = templates.TemplateResponse(
        request, name, {"operator": holder.name, **context}, status_code=status
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(request: Request, holder: ApiKey, status: int, title: str, message: str):
    """The error page: a title, the HTTP status and what went wrong."""
    context = {"status": status, "title": title, "message": message}
    return page(request, holder, "error.html", context, status)
