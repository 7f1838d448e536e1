"""A failed browser test leaves its page's screenshot and HTML under $LOOP_VAR_DIR/browser-failures/ and prints
their paths (the root conftest's ``pytest_runtest_makereport``): run for real in an inner pytest session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import browser_failure_name

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

INNER_TESTS = """
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_heading_that_is_not_there(browser_page):
    browser_page.set_content("<h1>주문 완료</h1><p id='total'>₩5,000</p>")
    assert browser_page.locator("h1").text_content() == "주문 실패"


def test_passes(browser_page):
    browser_page.set_content("<h1>ok</h1>")


def test_fails_without_a_browser():
    assert 1 == 2
"""


@pytest.mark.browser
def test_a_failing_browser_test_leaves_its_screenshot_and_html(pytester, monkeypatch, tmp_path):
    var_dir = tmp_path / "var"
    monkeypatch.setenv("LOOP_VAR_DIR", str(var_dir))
    # The inner session on its own SQLite file: on PostgreSQL it would take (and drop) this session's test database.
    for name in ("DATABASE_URL", "LOOP_INTEGRATION", "LOOP_SCREENSHOTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *sys.path]))
    pytester.makeconftest((ROOT / "conftest.py").read_text())
    pytester.makeini("[pytest]\nDJANGO_SETTINGS_MODULE = config.settings\nmarkers =\n    browser: browser\n")
    pytester.makepyfile(test_inner=INNER_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, failed=2)
    folder = var_dir / "browser-failures"
    name = browser_failure_name("test_inner.py::test_a_heading_that_is_not_there")
    png, html = folder / f"{name}.png", folder / f"{name}.html"
    assert sorted(folder.iterdir()) == [html, png]  # nothing for the passing test nor the one without a page
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "<h1>주문 완료</h1>" in html.read_text(encoding="utf-8")
    output = result.stdout.str()
    assert f"saved: {png}" in output  # in the failure's report
    assert "browser failures: the page of each failed browser test" in output
    result.stdout.fnmatch_lines(["*browser failures*", str(png), str(html)])


def test_failure_file_names_are_safe():
    assert browser_failure_name("crm/tests/test_x.py::test_y[a b/c]") == "crm-tests-test_x.py--test_y-a_b-c-"
