"""A real Chromium, driven by Playwright, against pytest-django's live server.

Playwright's sync API keeps an asyncio loop running in the main thread while it is up. Two
consequences for Django:

- The ORM refuses to run in a thread with a running loop unless DJANGO_ALLOW_ASYNC_UNSAFE is
  set. It is safe here: the test's own thread never runs ORM code concurrently with itself.
- Django's connection registry (asgiref's thread-critical Local) behaves like a context
  variable while a loop runs, so ORM calls made then use connections of their own, which lack
  the serialized copy of the database that `serialized_rollback` restores from. The browser
  therefore lives only for the test body (`browsing`); pytest-django's set-up and flush run
  with no loop. Tests create their data in fixtures requested *before* `browsing`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

# Assertions wait for the page as long as actions do (CI shares two cores).
expect.set_options(timeout=15_000)
# Django reads this at each ORM call, so setting it when the plugin loads is early enough.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# Quiet and offline: no sandbox (containers), no GPU, no calls home during a test.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Console:
    """What the page said on its console, and the uncaught errors it threw."""

    errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def record(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    @property
    def csp_violations(self) -> list[str]:
        return [text for text in self.errors if "Content Security Policy" in text]


@dataclass
class Browsing:
    page: Page
    console: Console
    base_url: str

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)

    def log_in(self, username: str, password: str) -> None:
        self.page.goto("/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        self.page.wait_for_url(f"{self.base_url}/")


@pytest.fixture
def browsing(live_server: Any) -> Iterator[Browsing]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 800}, locale="en-GB"
        )
        # Generous: CI shares two cores; a slow step is not a failure of the page.
        context.set_default_timeout(30_000)
        page = context.new_page()
        console = Console()
        page.on("console", console.record)
        page.on("pageerror", lambda exc: console.page_errors.append(str(exc)))
        try:
            yield Browsing(page=page, console=console, base_url=live_server.url)
        finally:
            context.close()
            browser.close()
            # Connections opened by ORM calls while the loop ran belong to the loop's context;
            # close them now, or they would hold the test database open until the session ends.
            connections.close_all()
