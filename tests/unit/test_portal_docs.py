"""docs/portal.md shows exactly the screenshots the browser tests write, and each one is committed."""

from __future__ import annotations

import re

from tests.conftest import ROOT

DOC = (ROOT / "docs" / "portal.md").read_text()
BROWSER_TESTS = (ROOT / "tests" / "browser" / "test_portal.py").read_text()


def test_the_portal_doc_shows_every_screenshot_the_browser_tests_write() -> None:
    shown = re.findall(r"!\[[^\]]+\]\(img/([a-z0-9-]+)\.png\)", DOC)
    written = re.findall(r"screenshot\(page, \"([a-z0-9-]+)\"\)", BROWSER_TESTS)
    assert len(shown) == len(set(shown)) and len(written) == len(set(written))
    assert sorted(shown) == sorted(written)
    for name in shown:
        assert (ROOT / "docs" / "img" / f"{name}.png").is_file(), name
