"""CORS seen from a real browser: the add-in's origin gets through a real preflight, others not.

The pages are served by small servers of the test's own on other loopback ports, so their
origins really differ from the CRM's. The request carries X-Addin-Version, a header that makes
Chromium send a preflight first; the response is readable only if the CRM allowed the origin.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crm.version import CRM_VERSION
from tests.e2e.conftest import Browsing

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

PAGE = """<!doctype html><title>waiting</title><script>
fetch("%(api)s/api/addin/v1/meta", {headers: {"X-Addin-Version": "1.0.0"}})
  .then(r => r.json())
  .then(j => { document.title = "answered " + j.crm_version; })
  .catch(() => { document.title = "blocked"; });
</script>"""


class _Page(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def origins(live_server: Any) -> Iterator[dict[str, str]]:
    handler = type("Handler", (_Page,), {"body": (PAGE % {"api": live_server.url}).encode()})
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in servers]
    yield {"allowed": urls[0], "other": urls[1]}
    for server in servers:
        server.shutdown()


def test_the_add_in_origin_reads_the_api_and_another_origin_is_refused(
    origins: dict[str, str], settings: Any, browsing: Browsing
) -> None:
    settings.CORS_ALLOWED_ORIGINS = [origins["allowed"]]
    page = browsing.page
    page.goto(origins["allowed"])
    page.wait_for_function("document.title !== 'waiting'")
    assert page.title() == f"answered {CRM_VERSION}"
    page.goto(origins["other"])
    page.wait_for_function("document.title !== 'waiting'")
    assert page.title() == "blocked"
