"""Hostile email in a real Chromium: nothing in a message can script, steer or leak the CRM.

RELIABILITY.md, "Email HTML cannot script the CRM". The payloads (tests/fixtures/xss/
payloads.txt) call a canary: an HTTP server of the test's own on another loopback port that
records every request. If any payload ran or loaded, the canary would hear it; the corpus
test shows that it does hear them when nothing protects the page.

Three layers stand between a payload and the CRM (sanitiser, sandboxed frame, the frame's
Content-Security-Policy); the canary proves the three together hold. The frame's DOM is also
audited as Chromium parsed it, so a sanitiser slip that the other layers would still catch
(a mutation-XSS payload that comes back to life when re-parsed) fails the test as well.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from PIL import Image
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Download,
    Frame,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Request as BrowserRequest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from crm.email.sanitize import sanitize_html
from crm.models import Message, Record
from crm.services import ingest
from tests.conftest import Org
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Browsing
from tests.factories import PASSWORD, make_record

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:No directory at:UserWarning")]
# The live server reads committed rows: see tests/e2e/test_crm_pages.py.
live_db = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "xss" / "payloads.txt"
PAYLOADS_PER_EMAIL = 40
# Long enough for timers, animations and a one-second meta refresh to have fired.
SETTLE_MS = 1_300
# How many payloads at least call the canary when nothing protects the page (143 of 278 with
# Chromium 156; see the last test).
CONTROL_MINIMUM = 120
CONTROLS = {"{NUL}": "\x00", "{TAB}": "\t", "{LF}": "\n", "{CR}": "\r", "{FF}": "\f"}
_B64 = re.compile(r"\{b64\}(.*?)\{/b64\}")


# --------------------------------------------------------------------------------------------
# The canary


class Canary:
    """A loopback HTTP server recording every request; `/remote.png` answers with an image."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.pages: dict[str, str] = {}
        self._lock = threading.Lock()
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                # Read any body: closing a socket with unread bytes resets it, and the browser
                # would retry the request.
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with canary._lock:
                    canary.requests.append(self.path)
                path = urlsplit(self.path).path
                if path == "/remote.png":
                    self._send(200, "image/png", _png(8, 8, "red"))
                elif path in canary.pages:
                    self._send(200, "text/html; charset=utf-8", canary.pages[path].encode())
                else:
                    self._send(204, "text/plain", b"")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_HEAD = do_OPTIONS = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def beacon(self, label: object) -> str:
        """The URL a payload calls (`Payload.render` writes the same)."""
        return f"{self.origin}/hit?id={label}"

    def remote_image(self, label: object) -> str:
        return f"{self.origin}/remote.png?email={label}"

    def hits(self) -> list[str]:
        """The ids of the beacons that were called, in order."""
        with self._lock:
            paths = list(self.requests)
        return [
            parse_qs(urlsplit(path).query).get("id", ["?"])[0]
            for path in paths
            if urlsplit(path).path == "/hit"
        ]

    def remote_images_fetched(self) -> set[str]:
        with self._lock:
            paths = list(self.requests)
        return {
            parse_qs(urlsplit(path).query).get("email", ["?"])[0]
            for path in paths
            if urlsplit(path).path == "/remote.png"
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    server = Canary()
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Payload:
    id: int
    template: str

    def render(self, canary_origin: str, crm_url: str) -> str:
        text = self.template.replace("CANARY", f"{canary_origin}/hit?id={self.id}")
        text = text.replace("CRM_URL", crm_url)
        for token, char in CONTROLS.items():
            text = text.replace(token, char)
        return _B64.sub(lambda m: base64.b64encode(m.group(1).encode()).decode(), text)


def load_corpus() -> list[Payload]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    templates = [line for line in lines if line.strip() and not line.startswith("#")]
    return [Payload(n, text) for n, text in enumerate(templates, start=1)]


# Markup that leaves foreign content (<p>), markup that does not (<a>), and bare text.
_PROBES = (
    "<p>ISOLATION-PROBE</p>",
    '<a href="http://probe.invalid/">ISOLATION-PROBE</a>',
    "ISOLATION-PROBE <b>bold</b>",
)


def _swallows_what_follows(payload: Payload) -> bool:
    """True if, once sanitised, the payload hides the markup after it (`<plaintext>`, an
    unclosed `<textarea>`...): such a payload goes last in its email."""
    html = payload.render("http://canary.invalid", "http://crm.invalid")
    return any(
        "ISOLATION-PROBE" not in sanitize_html(html + probe, allow_remote_images=False).html
        for probe in _PROBES
    )


def batches(payloads: Sequence[Payload], size: int) -> list[list[Payload]]:
    """Payloads in groups of about `size`, each group ending with at most one payload that
    swallows what follows it, so that every payload reaches the browser as markup."""
    tails = [p for p in payloads if _swallows_what_follows(p)]
    others = [p for p in payloads if p not in tails]
    count = max(math.ceil(len(others) / size), len(tails), 1)
    groups = [
        list(others[i * len(others) // count : (i + 1) * len(others) // count])
        for i in range(count)
    ]
    for group, tail in zip(groups, tails, strict=False):
        group.append(tail)
    return groups


def test_the_corpus_has_hundreds_of_distinct_payloads_each_with_an_observable_effect() -> None:
    payloads = load_corpus()
    assert len(payloads) >= 200
    assert len({p.template for p in payloads}) == len(payloads)
    effects = ("CANARY", "top.location", "parent.document.title", "alert(", "target=_top")
    assert [p for p in payloads if not any(e in p.template for e in effects)] == []
    grouped = batches(payloads, PAYLOADS_PER_EMAIL)
    assert sorted(p.id for group in grouped for p in group) == [p.id for p in payloads]


# --------------------------------------------------------------------------------------------
# Emails


def _png(width: int = 64, height: int = 48, colour: str = "orange") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


LOGO_CID = "logo@crm.test"


def _email(
    key: str,
    html: str,
    *,
    subject: str = "Hostile",
    sender: Address | None = None,
    to: Sequence[Address] = (),
    logo: bool = True,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender or Address("Mallory", addr_spec="mallory@attacker.test")
    msg["To"] = list(to) or [Address("Alice", addr_spec="alice@crm.test")]
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{key}@attacker.test>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content("Plain text version")
    msg.add_alternative(html, subtype="html", cte="base64")
    if logo:
        _html_part(msg).add_related(_png(), maintype="image", subtype="png", cid=f"<{LOGO_CID}>")
    return msg


def _html_part(msg: EmailMessage) -> EmailMessage:
    """The HTML alternative, where inline images are added as related parts."""
    parts = msg.get_payload()
    assert isinstance(parts, list)
    html = parts[1]
    assert isinstance(html, EmailMessage)
    return html


def _store(record: Record, msg: EmailMessage) -> Message:
    message = ingest.store(bytes(msg), source="addin").message
    ingest.link(message=message, record=record, actor=None, via="addin")
    return message


def _message_url(record: Record, message: Message) -> str:
    return reverse("crm:message_detail", args=[record.module.name, record.pk, message.pk])


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


# --------------------------------------------------------------------------------------------
# Watching the browser


@dataclass
class Watch:
    """Everything the browser context did that a payload could have caused."""

    origin: str
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)  # (document URL, text)
    popup_urls: list[str] = field(default_factory=list)
    links_without_tab: int = 0  # mailto/tel handed to the system

    def attach(self, context: BrowserContext, first: Page) -> None:
        context.on("request", self._request)
        context.on("dialog", self._dialog)
        context.on("page", self._page)
        first.on("console", self._console)

    def _request(self, request: BrowserRequest) -> None:
        self.requests.append(request.url)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _page(self, page: Page) -> None:
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append((message.location.get("url", ""), f"{message.type}: {message.text}"))

    def foreign_requests(self) -> list[str]:
        """Requests that left for anywhere but the CRM (data: URLs load nothing)."""
        return [
            url
            for url in self.requests
            if not url.startswith(f"{self.origin}/") and not url.startswith("data:")
        ]

    def refused_by_the_browser(self) -> list[str]:
        """What the sandbox or a policy had to stop: the sanitiser let it through.

        Not counted: Chromium's own viewer of an image opened directly styles it inline, and
        the image's policy refuses that.
        """
        words = ("Content Security Policy", "Blocked script execution", "sandboxed", "Refused")
        return [
            f"{text} ({url})"
            for url, text in self.console
            if any(w in text for w in words) and not urlsplit(url).path.startswith("/inline/")
        ]


@pytest.fixture
def watch(browsing: Browsing) -> Watch:
    watched = Watch(origin=browsing.base_url)
    watched.attach(browsing.page.context, browsing.page)
    return watched


def _body_frame(page: Page) -> Frame:
    handle = page.locator("iframe.message-frame").element_handle()
    frame = handle.content_frame()
    assert frame is not None
    frame.wait_for_load_state("load")
    return frame


# Independent of the sanitiser's own lists: what an email body may hold once Chromium has
# parsed it. Anything else (script, style, svg, math, form controls, frames, base, meta...)
# means a payload survived, whether or not the sandbox then stopped it.
SAFE_TAGS = frozenset(
    {
        *("a", "abbr", "address", "article", "aside", "b", "bdi", "bdo", "big", "blockquote"),
        *("br", "caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "details"),
        *("dfn", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1", "h2"),
        *("h3", "h4", "h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "main"),
        *("mark", "ol", "p", "pre", "q", "s", "samp", "section", "small", "span", "strike"),
        *("strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead"),
        *("time", "tr", "tt", "u", "ul", "var", "wbr"),
    }
)
AUDIT = """([safeTags, remote]) => {
  const safe = new Set(safeTags);
  const problems = [];
  const html = 'http://www.w3.org/1999/xhtml';
  const head = [...document.head.children].map(e => e.localName).join(',');
  if (head !== 'meta,meta,style') problems.push('head: ' + head);
  for (const el of document.body.querySelectorAll('*')) {
    const name = el.localName;
    if (el.namespaceURI !== html || !safe.has(name)) problems.push('element ' + el.outerHTML);
    for (const attr of el.attributes) {
      const a = attr.name.toLowerCase();
      const v = attr.value;
      const bad =
        a.startsWith('on') || a.includes(':') ||
        ['srcset', 'background', 'action', 'formaction', 'poster', 'ping', 'srcdoc', 'data',
         'code', 'codebase', 'usemap', 'autofocus', 'contenteditable', 'tabindex',
         'form'].includes(a) ||
        (a === 'href' && name !== 'a') || (a === 'src' && name !== 'img') ||
        (a === 'style' && /url\\(|expression|@import|behavior|binding|\\\\|position/i.test(v));
      if (bad) problems.push(name + ' ' + a + '=' + v);
    }
    if (name === 'a' && el.hasAttribute('href')) {
      const scheme = new URL(el.href).protocol;
      if (!['http:', 'https:', 'mailto:', 'tel:'].includes(scheme)) {
        problems.push('a href=' + el.getAttribute('href'));
      }
      if (el.target !== '_blank' || !/noopener/.test(el.rel)) {
        problems.push('a target/rel ' + el.outerHTML);
      }
    }
    if (name === 'img' && el.hasAttribute('src')) {
      const src = el.getAttribute('src');
      const ok =
        /^data:image\\/(png|gif|jpeg|webp|bmp);base64,/i.test(src) ||
        src.startsWith('/inline/') ||
        (remote && /^https?:/i.test(src));
      if (!ok) problems.push('img src=' + src);
    }
  }
  return problems;
}"""


def _audit(frame: Frame, *, remote: bool) -> list[str]:
    """What in the email's document, as Chromium parsed it, should not be there."""
    problems: list[str] = frame.evaluate(AUDIT, [sorted(SAFE_TAGS), remote])
    return problems


def _image_loaded(frame: Frame, selector: str) -> bool:
    loaded: bool = frame.evaluate(
        "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)",
        selector,
    )
    return loaded


def _frame_text(page: Page, text: str) -> Locator:
    return page.frame_locator("iframe.message-frame").get_by_text(text).first


def _click_every_link(frame: Frame, watch: Watch) -> None:
    """Clicks each link of the email, as a curious reader would; what opens is closed."""
    for link in frame.get_by_role("link").all():
        # Not bounding_box(): like any element-handle call, it puts Playwright's helper
        # script in the frame's main world, whose listeners the sandbox then reports as
        # "Blocked script execution" at every mouse move.
        if not link.is_visible():
            continue
        # The audit allows only target=_blank links to http(s), mailto and tel. A tab opens
        # for each, except where Chromium hands mailto/tel to the system without one.
        # The context's new page, not the opener's popup event: a noopener tab opened from
        # the sandboxed frame is not always reported as the page's popup.
        try:
            with frame.page.context.expect_page(timeout=5_000) as opened:
                link.click(force=True, no_wait_after=True)
        except PlaywrightTimeoutError:
            watch.links_without_tab += 1
            continue
        popup = opened.value
        popup.wait_for_url(lambda url: url != "about:blank", wait_until="commit")
        watch.popup_urls.append(popup.url)
        popup.close()


def _hover_over(page: Page) -> None:
    box = page.locator("iframe.message-frame").bounding_box()
    assert box is not None
    for step in range(8):
        page.mouse.move(box["x"] + 20 + step * box["width"] / 9, box["y"] + 20 + step * 40)


# --------------------------------------------------------------------------------------------
# 1. Hostile HTML bodies


@dataclass
class HostileBodies:
    record: Record
    urls: list[str]


@pytest.fixture
def hostile_bodies(org: Org, live_server: Any, canary: Canary) -> HostileBodies:
    record = make_record("Companies", org.alice, name="Hostile Ltd")
    payloads = load_corpus()
    urls = []
    for n, group in enumerate(batches(payloads, PAYLOADS_PER_EMAIL), start=1):
        body = "\n".join(p.render(canary.origin, live_server.url) for p in group)
        html = (
            f"<html><head><title>t</title></head><body>"
            f"<p>VISIBLE-TEXT-{n}</p>"
            f'<p><img src="cid:{LOGO_CID}" alt="logo" width="64" height="48"></p>'
            f'<p><img src="{canary.remote_image(n)}" alt="remote"></p>'
            f'<p><a href="{live_server.url}/?from=email-{n}">An ordinary link</a></p>'
            f"\n{body}\n</body></html>"
        )
        message = _store(record, _email(f"hostile-body-{n}", html, subject=f"Hostile {n}"))
        urls.append(_message_url(record, message))
    return HostileBodies(record=record, urls=urls)


@live_db
def test_hostile_html_bodies_run_nothing_navigate_nowhere_and_load_nothing_remote(
    hostile_bodies: HostileBodies, canary: Canary, browsing: Browsing, watch: Watch
) -> None:
    browsing.log_in("alice", PASSWORD)
    context = browsing.page.context
    opened: list[tuple[Page, str, str]] = []
    for n, url in enumerate(hostile_bodies.urls, start=1):
        # One tab per email, all left open, so that one wait lets every timer fire.
        page = browsing.page if n == 1 else context.new_page()
        page.goto(url)
        frame = _body_frame(page)
        expect(_frame_text(page, f"VISIBLE-TEXT-{n}")).to_be_visible()
        assert _image_loaded(frame, "img[alt=logo]")
        expect(page.get_by_role("status")).to_contain_text("1 remote image blocked")
        assert _audit(frame, remote=False) == [], url
        _click_every_link(frame, watch)
        _hover_over(page)
        opened.append((page, page.url, page.title()))
    opened[0][0].wait_for_timeout(SETTLE_MS)
    ARTIFACTS.mkdir(exist_ok=True)
    opened[0][0].screenshot(path=ARTIFACTS / "hostile-mail-01-body.png")

    assert canary.hits() == []
    assert canary.requests == []
    assert watch.foreign_requests() == []
    assert watch.dialogs == []
    assert watch.refused_by_the_browser() == []
    for page, url, title in opened:
        assert page.url == url
        assert page.title() == title
        assert _body_frame(page).url == f"{url}body/"
    # The emails' own links open in new tabs, only ever on http(s) addresses. (Chromium now
    # and then opens a tab without Playwright seeing the event, so not every one is counted.)
    assert all(urlsplit(u).scheme in {"http", "https"} for u in watch.popup_urls)
    ordinary = {f"{browsing.base_url}/?from=email-{n}" for n in range(1, len(opened) + 1)}
    assert len(ordinary & set(watch.popup_urls)) >= len(opened) - 2

    # Asked for, the remote images load: the watch above would have seen them. Still nothing
    # runs, and nothing else leaves.
    for n, (page, _, _) in enumerate(opened, start=1):
        page.bring_to_front()  # a background tab gets its input events at one frame a second
        page.get_by_role("link", name="Show remote images").click()
        expect(page).to_have_url(re.compile(r"\?images=1$"))
        frame = _body_frame(page)
        expect(_frame_text(page, f"VISIBLE-TEXT-{n}")).to_be_visible()
        assert _image_loaded(frame, "img[alt=remote]")
        assert _audit(frame, remote=True) == [], page.url
    opened[0][0].wait_for_timeout(SETTLE_MS)
    assert canary.remote_images_fetched() == {str(n) for n in range(1, len(opened) + 1)}
    assert canary.hits() == []
    assert [
        u for u in watch.foreign_requests() if not u.startswith(f"{canary.origin}/remote.png?")
    ] == []
    assert watch.dialogs == []
    assert watch.refused_by_the_browser() == []
    assert [page.title() for page, _, _ in opened] == [title for _, _, title in opened]


# --------------------------------------------------------------------------------------------
# 2. Hostile subjects, names, filenames and attachments

HEADER_EMAILS = 6
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
    ' width="40" height="40" onload="fetch(\'{beacon}\')">'
    "<script>fetch('{beacon}');top.location='{beacon}'</script>"
    '<image href="{beacon}" width="10" height="10"/>'
    '<a xlink:href="javascript:fetch(\'{beacon}\')"><text y="20">click</text></a></svg>'
)


@dataclass
class HostileHeaders:
    record: Record
    messages: list[Message]
    payload_count: int
    active: dict[str, bytes]  # attachments a browser would run, by filename
    plain: Message  # text only: shown in the page itself, not in a frame


def _printable(text: str) -> bool:
    return all(ord(c) >= 32 and c != "\x7f" for c in text)


@pytest.fixture
def hostile_headers(org: Org, live_server: Any, canary: Canary) -> HostileHeaders:
    record = make_record("Companies", org.alice, name="Headers Ltd")
    rendered = [p.render(canary.origin, live_server.url) for p in load_corpus()]
    texts = [t for t in rendered if _printable(t)]
    slots: list[tuple[list[str], list[str], list[str]]] = [
        ([], [], []) for _ in range(HEADER_EMAILS)
    ]
    for i, text in enumerate(texts):
        slots[i % HEADER_EMAILS][(i // HEADER_EMAILS) % 3].append(text)

    def svg(label: str) -> bytes:
        return SVG.format(beacon=canary.beacon(label)).encode()

    page = "<!doctype html><html><body>{}</body></html>"
    active = {
        "invoice.html": page.format("\n".join(rendered)).encode(),
        "chart.svg": svg("svg-attachment"),
        "page.xhtml": svg("xhtml-attachment"),
        "readme.txt": page.format(
            f"<script>fetch('{canary.beacon('html-as-text')}')</script>"
        ).encode(),
        "report.html": page.format(
            f"<script>fetch('{canary.beacon('octet-html')}')</script>"
        ).encode(),
    }
    types = {
        "invoice.html": "text/html",
        "chart.svg": "image/svg+xml",
        "page.xhtml": "application/xhtml+xml",
        "readme.txt": "text/plain",
        "report.html": "application/octet-stream",
    }
    messages = []
    for k, (subjects, names, filenames) in enumerate(slots):
        msg = _email(
            f"hostile-headers-{k}",
            f'<p>VISIBLE-TEXT-headers-{k}</p><p><img src="cid:{LOGO_CID}" alt="logo"></p>'
            '<p><img src="cid:svg-as-png@crm.test" alt="svg-as-png">'
            '<img src="cid:svg@crm.test" alt="svg"></p>',
            subject=" ".join(subjects),
            sender=Address(names[0], addr_spec="mallory@attacker.test"),
            to=[Address(name, addr_spec=f"to{j}@attacker.test") for j, name in enumerate(names)],
        )
        related = _html_part(msg)
        related.add_related(
            svg(f"svg-as-png-{k}"), maintype="image", subtype="png", cid="<svg-as-png@crm.test>"
        )
        related.add_related(
            svg(f"svg-inline-{k}"), maintype="image", subtype="svg+xml", cid="<svg@crm.test>"
        )
        for j, filename in enumerate(filenames):
            msg.add_attachment(
                f"attachment {k}.{j}".encode(),
                maintype="application",
                subtype="octet-stream",
                filename=filename,
            )
        if k == 0:
            for filename, data in active.items():
                maintype, subtype = types[filename].split("/")
                msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        messages.append(_store(record, msg))
    plain = EmailMessage()
    plain["From"] = Address(texts[0], addr_spec="mallory@attacker.test")
    plain["Subject"] = f"{texts[1]} (text only)"
    plain["Message-ID"] = "<hostile-plain@attacker.test>"
    plain.set_content("\n".join(rendered), cte="base64")
    return HostileHeaders(
        record=record,
        messages=messages,
        payload_count=len(texts),
        active=active,
        plain=_store(record, plain),
    )


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def _download(page: Page, url: str) -> Download:
    # Chromium aborts a navigation that turns into a download; Playwright reports it.
    with page.expect_download() as info, contextlib.suppress(PlaywrightError):
        page.goto(url)
    return info.value


_PATH_OR_CONTROL = re.compile(r"[\x00-\x1f\x7f/\\\u202e]")
_ACTIVE_TYPES = re.compile(r"html|xml|svg|javascript|ecmascript", re.I)


@live_db
def test_hostile_subjects_names_filenames_and_attachments_show_as_text_and_download_as_bytes(
    hostile_headers: HostileHeaders, canary: Canary, browsing: Browsing, watch: Watch
) -> None:
    record = hostile_headers.record
    messages = [Message.objects.get(pk=m.pk) for m in hostile_headers.messages]
    browsing.log_in("alice", PASSWORD)
    page = browsing.page
    context = page.context

    # The Messages tab lists them, every subject and sender as the text it is.
    page.goto(f"/m/{record.module.name}/{record.pk}/?tab=messages")
    table = _squeeze(page.locator("table.messages").inner_text())
    for message in messages:
        assert _squeeze(message.subject) in table
        assert _squeeze(message.from_name) in table
        assert "<" in message.subject  # the payloads reached the page as text, not as markup

    # Each message page shows subject, names and filenames as text, and its title is the text.
    opened: list[tuple[Page, str]] = []
    for message in messages:
        tab = context.new_page()
        tab.goto(_message_url(record, message))
        expect(tab.get_by_role("heading", level=1)).to_have_text(message.subject)
        meta = _squeeze(tab.locator(".message-meta").inner_text())
        for address in [{"name": message.from_name}, *message.to]:
            assert _squeeze(address["name"]) in meta
        names = [_squeeze(a.filename) for a in message.attachments.filter(inline=False)]
        expect(tab.locator("ul.attachments a")).to_have_text(names)
        assert _squeeze(tab.title()) == _squeeze(f"{message.subject} · {record.number} · CRM")
        expect(_frame_text(tab, "VISIBLE-TEXT-headers-")).to_be_visible()
        opened.append((tab, tab.url))

    # A text-only email is shown as text in the page itself.
    plain = Message.objects.get(pk=hostile_headers.plain.pk)
    tab = context.new_page()
    tab.goto(_message_url(record, plain))
    expect(tab.locator("iframe")).to_have_count(0)
    assert _squeeze(tab.locator("pre.message-text").inner_text()) == _squeeze(plain.text_body)
    expect(tab.get_by_role("heading", level=1)).to_have_text(plain.subject)
    assert "<script>" in plain.text_body
    opened.append((tab, tab.url))

    # The first email's attachments (its share of the hostile names, and the files a browser
    # would run) download with harmless names, as the bytes sent, never rendered.
    first, first_url = opened[0]
    downloader = context.new_page()
    links = first.locator("ul.attachments a").all()
    for link in links:
        href = link.get_attribute("href")
        assert href is not None
        response = context.request.get(href)
        assert response.headers["content-disposition"].startswith("attachment;")
        assert response.headers["x-content-type-options"] == "nosniff"
        assert not _ACTIVE_TYPES.search(response.headers["content-type"])
        download = _download(downloader, href)
        assert not _PATH_OR_CONTROL.search(download.suggested_filename)
        name = link.inner_text()
        if name in hostile_headers.active:
            assert Path(download.path()).read_bytes() == hostile_headers.active[name]
    assert len(links) > len(hostile_headers.active)
    eml = _download(
        downloader, first.get_by_role("link", name="Download .eml").get_attribute("href") or ""
    )
    assert eml.suggested_filename.endswith(".eml")
    assert not _PATH_OR_CONTROL.search(eml.suggested_filename)

    # The inline parts: an SVG labelled image/png is served as an image (nosniff keeps it one);
    # a real SVG part is not served at all.
    frame = _body_frame(first)
    sources: dict[str, str] = frame.evaluate(
        "() => Object.fromEntries([...document.images].map(i => [i.alt, i.getAttribute('src')]))"
    )
    as_png = downloader.goto(sources["svg-as-png"])
    assert as_png is not None
    assert as_png.status == 200
    assert as_png.headers["content-type"] == "image/png"
    svg = downloader.goto(sources["svg"])
    assert svg is not None
    assert svg.status == 404

    # The Documents tab names every file as text; the active ones download from there too.
    page.goto(f"/m/{record.module.name}/{record.pk}/?tab=documents")
    titles = _squeeze(page.locator("ul.documents").inner_text())
    for message in messages:
        for attachment in message.attachments.filter(inline=False):
            assert _squeeze(attachment.document.title) in titles
    for name, data in hostile_headers.active.items():
        href = page.locator("li.document a", has_text=name).first.get_attribute("href")
        assert href is not None
        assert Path(_download(downloader, href).path()).read_bytes() == data
    ARTIFACTS.mkdir(exist_ok=True)
    first.bring_to_front()
    first.screenshot(path=ARTIFACTS / "hostile-mail-02-headers.png")

    # By now the message pages have been open for seconds: any timer would have fired.
    assert canary.hits() == []
    assert canary.requests == []
    assert watch.foreign_requests() == []
    assert watch.dialogs == []
    assert watch.refused_by_the_browser() == []
    assert [tab.url for tab, _ in opened] == [url for _, url in opened]
    assert first.url == first_url
    assert hostile_headers.payload_count >= 200


# --------------------------------------------------------------------------------------------
# 3. A benign newsletter

NEWSLETTER = """<html><head><style>.x{color:red}</style></head><body>
<table role="presentation" width="600" cellpadding="0" cellspacing="0" border="0"
       style="border-collapse:collapse;background-color:#f4f4f4">
  <tr><td colspan="2" style="background-color:#004488;color:#ffffff;padding:16px;font-size:24px">
    Monthly News</td></tr>
  <tr>
    <td width="300" valign="top" style="padding:12px">
      <img src="cid:hero@crm.test" alt="Hero" width="280" height="160"></td>
    <td width="300" valign="top" style="padding:12px;font-family:Georgia,serif">
      <h2>Spring offer</h2><p>Save <b>20%</b> on all widgets until 31 May.</p>
      <p><a href="https://news.example/offer">Read more</a></p></td>
  </tr>
  <tr><td colspan="2" style="font-size:11px;color:#666666;text-align:center">
    You receive this because you subscribed.
    <a href="https://news.example/unsubscribe">Unsubscribe</a></td></tr>
</table></body></html>"""


@pytest.fixture
def newsletter(org: Org) -> str:
    record = make_record("Companies", org.alice, name="Widgets Ltd")
    msg = _email("newsletter", NEWSLETTER, subject="Monthly News", logo=False)
    _html_part(msg).add_related(
        _png(280, 160, "teal"), maintype="image", subtype="png", cid="<hero@crm.test>"
    )
    return _message_url(record, _store(record, msg))


LAYOUT = """() => {
  const box = e => e.getBoundingClientRect();
  const cells = [...document.querySelectorAll('tr:nth-child(2) > td')].map(box);
  const header = document.querySelector('td[colspan]');
  return {
    rows: document.querySelectorAll('table tr').length,
    sideBySide: cells.length === 2 && Math.abs(cells[0].top - cells[1].top) < 1
      && cells[1].left >= cells[0].right - 1,
    tableWidth: box(document.querySelector('table')).width,
    headerBackground: getComputedStyle(header).backgroundColor,
    headerColour: getComputedStyle(header).color,
    links: [...document.links].map(a => [a.href, a.target, a.rel]),
  };
}"""


@live_db
def test_a_benign_newsletter_keeps_its_text_its_table_layout_and_its_inline_image(
    newsletter: str, browsing: Browsing, watch: Watch
) -> None:
    browsing.log_in("alice", PASSWORD)
    page = browsing.page
    page.goto(newsletter)
    frame = _body_frame(page)
    for text in ("Monthly News", "Spring offer", "Save 20% on all widgets until 31 May."):
        expect(_frame_text(page, text)).to_be_visible()
    assert _image_loaded(frame, "img[alt=Hero]")
    layout = frame.evaluate(LAYOUT)
    assert layout["rows"] == 3
    assert layout["sideBySide"]
    assert layout["tableWidth"] == 600
    assert layout["headerBackground"] == "rgb(0, 68, 136)"
    assert layout["headerColour"] == "rgb(255, 255, 255)"
    assert layout["links"] == [
        ["https://news.example/offer", "_blank", "noopener noreferrer"],
        ["https://news.example/unsubscribe", "_blank", "noopener noreferrer"],
    ]
    expect(page.get_by_text("remote image")).to_have_count(0)
    expect(page.locator("ul.attachments")).to_have_count(0)  # its image is in the text
    assert _audit(frame, remote=False) == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "hostile-mail-03-newsletter.png", full_page=True)
    assert watch.foreign_requests() == []
    assert watch.refused_by_the_browser() == []


# --------------------------------------------------------------------------------------------
# The control: the payloads are live


def test_the_payloads_do_call_the_canary_when_nothing_protects_the_page(canary: Canary) -> None:
    """The same emails' HTML, unsanitised, each in a frame that may run scripts (but not
    navigate the page): about half the payloads call the canary, so its silence in the tests
    above means the CRM stopped them, not that they were duds. The rest need a click, a
    sanitiser to come alive (mutation XSS), a top-level navigation or an old browser."""
    payloads = load_corpus()
    frames = "".join(
        f'<iframe sandbox="allow-scripts" srcdoc="{escape(body)}"></iframe>'
        for body in (
            "\n".join(p.render(canary.origin, canary.origin) for p in group)
            for group in batches(payloads, PAYLOADS_PER_EMAIL)
        )
    )
    canary.pages["/control"] = f"<!doctype html><html><body>{frames}</body></html>"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{canary.origin}/control", wait_until="domcontentloaded")
            page.wait_for_timeout(SETTLE_MS)
            heard = -1
            while heard != len(canary.requests):  # until half a second brings nothing new
                heard = len(canary.requests)
                page.wait_for_timeout(500)
        finally:
            browser.close()
    fired = {int(hit) for hit in canary.hits() if hit.isdigit()}
    silent = sorted({p.id for p in payloads} - fired)
    assert len(fired) >= CONTROL_MINIMUM, f"{len(fired)} fired; silent: {silent}"
