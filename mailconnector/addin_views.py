"""The Outlook add-in's task pane, served by the CRM under /addin/.

The pane is plain HTML/CSS/JS in mailconnector/addin/ (no build step). Its page is rendered
once per request only to prefill the CRM's address; the scripts, styles and icons are served
as they are. The page has its own Content-Security-Policy: office.js comes from Microsoft's
CDN, calls go only to this CRM, and Outlook on the web may frame it.
"""

from __future__ import annotations

from pathlib import Path

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.template import Engine, Template
from django.template.context import Context
from django.urls import get_script_prefix
from django.utils.cache import patch_cache_control
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_safe
from django.views.static import serve

ADDIN_DIR = Path(__file__).resolve().parent / "addin"
# What may be fetched under /addin/: the pane's own assets, never its tests or templates.
ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
ASSET_DIRS = ("js", "icons")
ASSET_FILES = ("taskpane.css",)
# Outlook on the web and the new Outlook for Windows frame the pane; desktop Outlook shows it
# in a web view of its own (no ancestor). Nothing else may frame it (the login form).
OUTLOOK_FRAME_ANCESTORS = (
    "'self' https://*.office.com https://*.office365.com https://*.outlook.com "
    "https://*.live.com https://*.microsoft.com https://*.microsoft365.com "
    "https://*.cloud.microsoft https://*.office.net"
)
OFFICE_SCRIPTS = "https://appsforoffice.microsoft.com https://ajax.aspnetcdn.com"
PANE_POLICY = (
    "default-src 'self'; "
    f"script-src 'self' {OFFICE_SCRIPTS}; "
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    f"frame-ancestors {OUTLOOK_FRAME_ANCESTORS}"
)


_ENGINE = Engine(autoescape=True)  # no loaders: only these two files are ever templates


def _template(name: str) -> Template:
    # Read on each request (a few KB): an updated CRM serves the updated page at once.
    return _ENGINE.from_string((ADDIN_DIR / name).read_text(encoding="utf-8"))


def _page(request: HttpRequest, name: str) -> HttpResponse:
    # The CRM's own address (under its script prefix, if any): the pane talks only to it.
    crm_url = request.build_absolute_uri(get_script_prefix()).rstrip("/")
    context = Context({"crm_url": crm_url})
    response = HttpResponse(_template(name).render(context), content_type="text/html")
    response["Content-Security-Policy"] = PANE_POLICY
    # The sign-in dialog reports back to the pane that opened it: no opener isolation.
    response["Cross-Origin-Opener-Policy"] = "unsafe-none"
    response["Referrer-Policy"] = "no-referrer"
    patch_cache_control(response, no_cache=True)
    return response


@require_safe
@xframe_options_exempt
def taskpane(request: HttpRequest) -> HttpResponse:
    return _page(request, "taskpane.html")


@require_safe
@xframe_options_exempt
def commands(request: HttpRequest) -> HttpResponse:
    return _page(request, "commands.html")


@require_safe
def asset(request: HttpRequest, path: str) -> HttpResponseBase:
    top = path.split("/", 1)[0]
    suffix = Path(path).suffix.lower()
    allowed = (top in ASSET_DIRS and "/" in path) or path in ASSET_FILES
    if not allowed or suffix not in ASSET_TYPES:
        raise Http404("No such add-in file.")
    response = serve(request, path, document_root=str(ADDIN_DIR))
    response["Content-Type"] = ASSET_TYPES[suffix]
    # Revalidated on each load (Last-Modified), so an updated CRM updates the pane at once.
    patch_cache_control(response, no_cache=True)
    return response
