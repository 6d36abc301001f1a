"""A person's visit, in a real browser (Debian's chromium driven by Playwright): open the site,
search a name, see thumbnails, open a domain. Screenshots go to test-output/browser/. Requests
anywhere but 127.0.0.1 (the thumbnails' hosts) are blocked: the tests use no network."""

import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

from laion_pipeline.layout import REPORT_CHARTS
from laion_pipeline_tests.dagster_dev import REPO_ROOT
from laion_pipeline_tests.datasette_site import DB, served

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(os.environ.get("LAION_TEST_OUTPUT", REPO_ROOT / "test-output")) / "browser"

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)",
)
pytestmark = needs_chromium


@pytest.fixture
def page(sample_build):
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []

    def only_local(route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    OUTPUT.mkdir(parents=True, exist_ok=True)
    with served(sample_build.root) as site, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", only_local)
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(site.base)
            yield page
        finally:
            browser.close()


def test_search_a_name_see_thumbnails_and_open_a_domain(page):
    page.get_by_role("link", name="Search the captions").click()
    page.wait_for_url(f"**/{DB}/search**")
    page.locator("input[name=q]").fill('"Alphonse Mucha"')
    page.locator("input[name=after]").fill("")
    page.locator("form input[type=submit]").first.click()
    page.wait_for_url("**q=%22Alphonse+Mucha%22**")
    rows = page.locator("table.rows-and-columns tbody tr")
    assert rows.count() > 0
    assert all("mucha" in text.lower() for text in rows.locator("td.col-text").all_inner_texts())
    thumbnails = page.locator("td.col-url img[loading=lazy]")
    assert thumbnails.count() == rows.count()
    assert thumbnails.first.get_attribute("src").startswith("http")
    page.screenshot(path=OUTPUT / "search.png", full_page=True)

    page.goto(page.url.split(f"/{DB}/")[0] + f"/{DB}/domain")
    first = page.locator("td.col-domain a").first
    domain = first.inner_text()
    first.click()
    page.wait_for_url("**/images?domain_id=**")
    assert page.locator("td.col-url img[loading=lazy]").count() > 0
    assert domain in page.locator("td.col-domain_id").first.inner_text()
    page.screenshot(path=OUTPUT / "domain.png", full_page=True)
    assert (OUTPUT / "search.png").stat().st_size > 10_000


def test_open_the_report_from_the_index_and_see_its_charts(page):
    page.get_by_role("link", name="The analysis").click()
    page.wait_for_url("**/-/report/*/")  # the report at its release's own address
    title = "LAION-Aesthetics v2 6+: the images behind Stable Diffusion"  # the profile's
    assert page.title() == f"What the images are | {title}"
    charts = page.locator("img")
    assert charts.count() == len(REPORT_CHARTS)
    for index in range(charts.count()):
        chart = charts.nth(index)
        chart.scroll_into_view_if_needed()
        # A chart that loaded and decoded has a width; a broken image has none.
        assert chart.evaluate("img => img.complete && img.naturalWidth") == 800
    assert page.locator("table").first.locator("tbody tr").count() == 20
    page.screenshot(path=OUTPUT / "report.png", full_page=True)
    page.get_by_role("link", name="i.pinimg.com").first.click()
    page.wait_for_url(f"**/{DB}/domain?domain=i.pinimg.com")
    assert "i.pinimg.com" in page.locator("table.rows-and-columns").inner_text()
