from __future__ import annotations

import json
from functools import cache
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.email.parse import parse
from crm.email.sanitize import (
    BLOCKED_IMAGE_PLACEHOLDER,
    MAX_NESTING,
    html_to_text,
    sanitize_html,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "emails"

# Well-known XSS vectors (OWASP XSS Filter Evasion Cheat Sheet, HTML5 Security Cheatsheet
# and mail-client advisories). Every one must come out inert.
XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://xss.example/xss.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<img src="javascript:alert(1)">',
    "<img src=javascript:alert(1)>",
    "<IMG SRC=JaVaScRiPt:alert(1)>",
    "<img src=x onerror=alert(1)>",
    '<img src="x" onerror="alert(1)">',
    "<img src=`javascript:alert(1)`>",
    "<img src=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)>",
    "<img src=&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A;alert(1)>",
    '<img src="jav\tascript:alert(1);">',
    '<img src="jav&#x0A;ascript:alert(1);">',
    '<img src=" &#14;  javascript:alert(1);">',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JAVASCRIPT:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105'
    '&#0000112&#0000116&#0000058alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="data:text/html,<script>alert(1)</script>">x</a>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mtext></math>",
    "<body onload=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    "<object data=javascript:alert(1)></object>",
    '<embed src="javascript:alert(1)">',
    '<form action="javascript:alert(1)"><input type=submit></form>',
    "<button formaction=javascript:alert(1)>x</button>",
    "<input onfocus=alert(1) autofocus>",
    "<details open ontoggle=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<marquee onstart=alert(1)>x</marquee>",
    '<div style="background-image: url(javascript:alert(1))">x</div>',
    '<div style="width: expression(alert(1))">x</div>',
    '<div style="behavior: url(xss.htc)">x</div>',
    '<div style="background:url(&quot;javascript:alert(1)&quot;)">x</div>',
    "<style>@import 'http://xss.example/xss.css';</style>",
    '<link rel="stylesheet" href="javascript:alert(1)">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="javascript:alert(1)//">',
    '<table background="javascript:alert(1)"><tr><td>x</td></tr></table>',
    '<td background="http://tracker.example/bg.gif">x</td>',
    "<!--[if gte IE 4]><script>alert(1)</script><![endif]-->",
    '<a href="#" onclick="alert(1)">x</a>',
    '<p title="</p><script>alert(1)</script>">x</p>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<img src="x" srcset="http://tracker.example/a.png 1x">',
    "<xmp><img src=x onerror=alert(1)></xmp>",
    '<a href="https://ok.example/" target="_top" onmouseover="alert(1)">ok</a>',
]

_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "background", "poster", "srcset"}
_BAD_SCHEMES = ("javascript:", "vbscript:", "data:text", "data:image/svg")


class _Attributes(HTMLParser):
    """Every (tag, attribute, value) of an HTML string, as a browser would read them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.found.extend((tag, name, value or "") for name, value in attrs)


def attributes(html: str) -> _Attributes:
    parser = _Attributes()
    parser.feed(html)
    parser.close()
    return parser


def assert_inert(html: str) -> None:
    """No script, no event handler, no script or document URL anywhere a browser looks."""
    assert "<script" not in html.lower()
    found = attributes(html)
    assert not {"script", "iframe", "object", "embed", "form", "svg", "style"} & set(found.tags)
    for tag, name, value in found.found:
        assert not name.startswith("on"), (tag, name)
        assert name not in {"srcset", "background", "action", "formaction"}, (tag, name)
        compact = "".join(ch for ch in unescape(value) if ch > " ").lower()
        if name in _URL_ATTRIBUTES or name == "style":
            assert not compact.startswith(_BAD_SCHEMES), (tag, name, value)
            assert "javascript:" not in compact, (tag, name, value)
            assert "expression(" not in compact, (tag, name, value)
            assert "url(" not in compact, (tag, name, value)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_known_xss_payloads_come_out_inert(payload: str) -> None:
    for allow in (False, True):
        assert_inert(sanitize_html(payload, allow_remote_images=allow).html)


def test_all_known_xss_payloads_together_come_out_inert() -> None:
    assert_inert(sanitize_html("".join(XSS_PAYLOADS), allow_remote_images=True).html)


def test_formatting_tables_and_safe_styles_are_kept() -> None:
    html = (
        '<table border="1" cellpadding="4"><tr><td colspan="2" style="color: #336699; '
        'font-weight: bold">Total</td></tr></table><p align="center"><b>bold</b> '
        '<i>it</i> <u>u</u> <font color="red" face="Arial">font</font></p><ul><li>one</li></ul>'
    )

    result = sanitize_html(html, allow_remote_images=False).html

    for kept in (
        '<table border="1" cellpadding="4">',
        'colspan="2"',
        'style="color:#336699;font-weight:bold"',
        '<p align="center"><b>bold</b>',
        '<font color="red" face="Arial">font</font>',
        "<ul><li>one</li></ul>",
    ):
        assert kept in result.replace("color: #", "color:#").replace(
            "font-weight: ", "font-weight:"
        )


def test_positioning_and_url_styles_are_removed() -> None:
    html = '<div style="position: fixed; top: 0; color: red">x</div>'

    result = sanitize_html(html, allow_remote_images=False).html

    assert "position" not in result
    assert "color" in result


def test_links_open_in_a_new_tab_without_referrer_or_opener() -> None:
    result = sanitize_html(
        '<a href="https://x.example/a" target="_top">x</a>', allow_remote_images=False
    )

    [(tag, *_)] = [item for item in attributes(result.html).found if item[1] == "href"]
    found = {name: value for _tag, name, value in attributes(result.html).found}
    assert tag == "a"
    assert found == {
        "href": "https://x.example/a",
        "target": "_blank",
        "rel": "noopener noreferrer",
    }


@pytest.mark.parametrize(
    "href",
    ["mailto:bob@customer.example", "tel:+49301234567", "http://x.example/", "HTTPS://X.example/"],
)
def test_mail_phone_and_web_links_are_kept(href: str) -> None:
    html = f'<a href="{href}">x</a>'

    assert f'href="{href}"' in sanitize_html(html, allow_remote_images=False).html


@pytest.mark.parametrize(
    "href", ["/admin/delete", "//evil.example/", "relative.html", "#top", "ftp://x/"]
)
def test_relative_and_other_links_lose_their_target(href: str) -> None:
    html = f'<a href="{href}">x</a>'

    assert "href" not in sanitize_html(html, allow_remote_images=False).html


def test_remote_images_are_blocked_with_their_address_kept_for_later() -> None:
    html = '<p><img src="https://tracker.example/open.gif?u=1&amp;m=2" alt="pixel"></p>'

    result = sanitize_html(html, allow_remote_images=False)

    assert result.blocked_remote_images == 1
    found = {name: value for _tag, name, value in attributes(result.html).found}
    assert found == {
        "src": BLOCKED_IMAGE_PLACEHOLDER,
        "data-blocked-src": "https://tracker.example/open.gif?u=1&m=2",
        "alt": "pixel",
    }


def test_remote_images_load_when_allowed() -> None:
    html = '<img src="http://images.example/a.png">'

    result = sanitize_html(html, allow_remote_images=True)

    assert result.blocked_remote_images == 0
    assert result.html == '<img src="http://images.example/a.png">'


def test_a_message_cannot_forge_a_blocked_image_marker() -> None:
    html = "<p title=' src=\"x-blocked-0000000000000000:http://a'>src=\"x-blocked-</p>"

    result = sanitize_html(html, allow_remote_images=False)

    assert result.blocked_remote_images == 0
    assert "data-blocked-src" not in result.html


def test_cid_images_are_served_through_the_callers_url() -> None:
    seen: list[str] = []

    def cid_url(content_id: str) -> str | None:
        seen.append(content_id)
        return f"/messages/7/parts/{content_id}" if content_id == "logo@x" else None

    html = '<img src="cid:logo@x"><img src="cid:missing@x">'
    result = sanitize_html(html, allow_remote_images=False, cid_url=cid_url)

    assert seen == ["logo@x", "missing@x"]
    assert result.html == '<img src="/messages/7/parts/logo@x"><img>'


def test_cid_images_without_a_resolver_are_dropped() -> None:
    assert sanitize_html('<img src="cid:logo@x">', allow_remote_images=True).html == "<img>"


@pytest.mark.parametrize("bad", ["javascript:alert(1)", "//evil.example/x", "data:text/html,x", ""])
def test_a_cid_resolver_returning_an_unsafe_url_is_ignored(bad: str) -> None:
    result = sanitize_html('<img src="cid:a@b">', allow_remote_images=True, cid_url=lambda _: bad)

    assert result.html == "<img>"


def test_raster_data_images_are_kept_and_svg_data_images_dropped() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    svg = "data:image/svg+xml;base64,PHN2Zz4="

    result = sanitize_html(f'<img src="{png}"><img src="{svg}">', allow_remote_images=False)

    assert result.html == f'<img src="{png}"><img>'


def test_a_parsed_newsletter_is_sanitised_and_its_pixel_counted() -> None:
    name = "newsletter-list-headers-html-only.eml"
    facts = manifest()[name]["expect"]
    email = parse((FIXTURES / name).read_bytes())
    assert email.html_body is not None

    result = sanitize_html(email.html_body, allow_remote_images=False)

    assert_inert(result.html)
    assert result.blocked_remote_images == facts["sanitized_blocked_remote_images"]


def test_html_nested_too_deep_to_sanitise_quickly_is_shown_as_escaped_text() -> None:
    html = "<div>" * (MAX_NESTING + 1) + "<b>Fish &amp; chips</b><script>alert(1)</script>"

    result = sanitize_html(html, allow_remote_images=False)

    assert result.html == "<pre>Fish &amp; chips alert(1)</pre>"
    assert_inert(result.html)


def test_html_nested_just_below_the_cap_is_sanitised_normally() -> None:
    html = "<div>" * (MAX_NESTING - 1) + "<b>deep</b>"

    assert "<b>deep</b>" in sanitize_html(html, allow_remote_images=False).html


# --------------------------------------------------------------------------------------
# html_to_text


def test_text_of_html_puts_blocks_on_their_own_lines() -> None:
    html = "<h1>Title</h1><p>First <b>bold</b> para.</p><div>Second</div>line<br>break"

    assert html_to_text(html) == "Title\n\nFirst bold para.\n\nSecond\nline\nbreak"


def test_text_of_html_leaves_out_scripts_styles_and_the_title() -> None:
    html = (
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><p>Visible</p><!-- hidden --></body></html>"
    )

    assert html_to_text(html) == "Visible"


def test_text_of_html_decodes_entities_and_collapses_whitespace() -> None:
    html = "<p>Fish &amp;   chips&nbsp;&euro;5\n\n   today</p>"

    assert html_to_text(html) == "Fish & chips €5 today"


def test_text_of_html_keeps_list_items_and_table_cells_apart() -> None:
    html = "<ul><li>one</li><li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>"

    text = html_to_text(html)

    assert "- one" in text
    assert "- two" in text
    assert "a\tb" in text


def test_text_of_html_keeps_preformatted_line_breaks() -> None:
    assert html_to_text("<pre>line 1\nline 2</pre>") == "line 1\nline 2"


def test_text_of_html_nested_too_deep_is_still_readable() -> None:
    html = "<blockquote>" * (MAX_NESTING + 1) + "Quoted &amp; requoted"

    assert html_to_text(html) == "Quoted & requoted"


def test_text_of_a_parsed_newsletter_reads_like_the_page() -> None:
    name = "newsletter-list-headers-html-only.eml"
    facts = manifest()[name]["expect"]
    email = parse((FIXTURES / name).read_bytes())
    assert email.html_body is not None

    text = html_to_text(email.html_body)

    for snippet in facts["html_text_contains"]:
        assert snippet in text
    for snippet in facts["html_text_excludes"]:
        assert snippet not in text


# --------------------------------------------------------------------------------------
# Properties

FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTML_PIECES = [
    *XSS_PAYLOADS,
    *("<", ">", "</", "/>", '"', "'", "`", "=", " ", "\t", "\n", "\x00", "&#", "&#x", ";"),
    *(" on", "onerror=", "onload", "javascript:", "java", "script:", "vbscript:", "data:"),
    *("<img src=", "<a href=", "<svg", "<math", "<style>", "<script", "<iframe", "<table"),
    *("<!--", "-->", "<![CDATA[", "]]>", "style=", "url(", "expression(", "cid:", "http://x/"),
]
html_soup = st.lists(st.sampled_from(HTML_PIECES), max_size=30).map("".join)


@FAST
@given(st.one_of(st.text(max_size=500), html_soup), st.booleans())
def test_sanitised_output_is_inert_for_any_input(html: str, allow_remote_images: bool) -> None:
    result = sanitize_html(
        html, allow_remote_images=allow_remote_images, cid_url=lambda cid: f"/parts/{cid}"
    )

    assert_inert(result.html)
    assert result.blocked_remote_images >= 0


@FAST
@given(st.one_of(st.text(max_size=500), html_soup))
def test_sanitising_twice_changes_nothing_more(html: str) -> None:
    once = sanitize_html(html, allow_remote_images=True).html
    twice = sanitize_html(once, allow_remote_images=True).html

    # nh3 does not keep attribute order, so compare what a browser would build.
    assert canonical(twice) == canonical(once)


def canonical(html: str) -> list[object]:
    class Events(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.events: list[object] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.events.append((tag, sorted(attrs, key=str)))

        def handle_endtag(self, tag: str) -> None:
            self.events.append(f"/{tag}")

        def handle_data(self, data: str) -> None:
            self.events.append(data)

    parser = Events()
    parser.feed(html)
    parser.close()
    return parser.events


@FAST
@given(st.text(alphabet=st.characters(exclude_characters="<&"), max_size=200), html_soup)
def test_script_contents_never_reach_the_text(prefix: str, suffix: str) -> None:
    text = html_to_text(f"{prefix}<script>SECRET_MARKER()</script>{suffix}")

    assert "SECRET_MARKER" not in text


@cache
def manifest() -> dict[str, Any]:
    files: dict[str, Any] = json.loads((FIXTURES / "MANIFEST.json").read_text("utf-8"))["files"]
    return files
