"""Browser fixtures: the app over the tiny analyzed store (`browsed_store`), served on a free
port, and headless Chromium (Debian's `chromium`, driven by Playwright). Screenshots go to
test-artifacts/dashboard/."""

import os
import shutil
from pathlib import Path

import pytest

from raysae.dashboard import Server, create_app

ARTIFACTS = (
    Path(os.environ.get("RAYSAE_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "dashboard"
)
# As root and on a closed network: no sandbox, no background connections to Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]


def chromium_path() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "Chromium is missing: `bash scripts/install.sh --dev` installs Debian's chromium "
            "(or set CHROMIUM=/path/to/chromium)"
        )
    return found


@pytest.fixture(scope="module")
def site(browsed_store):
    with Server(create_app(browsed_store, seed=0)) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()
