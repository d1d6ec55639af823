"""The API's browsable documentation works offline: Swagger UI's assets are served by the service itself."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.e2e.conftest import Devhost


def test_the_api_docs_render_without_a_cdn(portal: Devhost, page: Page) -> None:
    page.goto(f"{portal.url}/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Workspace Vending", timeout=15000)
    expect(page.locator(".opblock-tag").first).to_be_visible()
