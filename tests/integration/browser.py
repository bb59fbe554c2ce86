"""Headless Chromium for the dashboard tests: Debian's ``chromium`` (scripts/test.sh installs it)
driven by Playwright for Python; Playwright's own browser downloads are never used. Screenshots go
to the test's folder and, when ``COLDCHAIN_SCREENS_DIR`` names one, are copied there to look at."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}


def missing(what: str) -> None:
    """Skip on a developer's machine without it; fail in CI, where scripts/test.sh installs it."""
    if os.environ.get("CI"):
        pytest.fail(what)
    pytest.skip(what)


@contextmanager
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (the dev extra pins it)")
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (scripts/test.sh installs Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Screens:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        copy = os.environ.get("COLDCHAIN_SCREENS_DIR")
        self.copy_to = Path(copy) if copy else None
        self.taken: list[Path] = []

    def shot(self, page: Any, name: str, full_page: bool = True) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        if self.copy_to is not None:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.copy_to / path.name)
        return path


def sign_in(browser: Any, base: str, token: str) -> Any:
    """A new browser context signed in with ``token`` through the login form; its page."""
    context = browser.new_context(viewport=VIEWPORT, base_url=base)
    page = context.new_page()
    page.goto("/ui/")
    assert "/ui/login" in page.url, page.url  # no session yet: the sign-in page
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/ui/")
    return page
