"""A person's visit, in a real browser (Debian's chromium driven by Playwright): open the site,
search a name, see thumbnails, open a domain. Screenshots go to test-output/browser/. Requests
anywhere but 127.0.0.1 (the thumbnails' hosts) are blocked: the tests use no network."""

import urllib.parse

import pytest

from laion_pipeline.common.layout import REPORT_CHARTS
from laion_pipeline_tests.conftest import CHROMIUM, OUTPUT, needs_chromium
from laion_pipeline_tests.datasette_site import DB, served

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


def test_search_see_the_count_the_words_found_and_the_urls_with_the_images_blocked(page, published):
    page.get_by_role("link", name="Search the captions").click()
    page.wait_for_url("**/-/search")
    assert page.title().startswith("Search the captions")
    assert "Only the captions are searched" in page.locator("section.content").inner_text()
    page.locator("input[name=q]").fill('"Alphonse Mucha"')
    page.locator("form input[type=submit]").first.click()
    page.wait_for_url("**q=%22Alphonse+Mucha%22**")
    (count,) = published.execute(
        "SELECT count(*) FROM images_fts WHERE images_fts MATCH '\"Alphonse Mucha\"'"
    ).fetchone()
    said = f"{count:,} image{'s' if count != 1 else ''}"
    assert page.locator(".laion-count").inner_text().startswith(said)
    assert page.title().startswith(f'"Alphonse Mucha": {said}')
    rows = page.locator("table.laion-results tbody tr")
    assert rows.count() == min(count, 50) > 0
    # The phrase found is marked in each caption.
    for caption in page.locator("table.laion-results tbody tr td:nth-child(2)").all():
        assert "alphonse mucha" in [m.lower() for m in caption.locator("mark").all_inner_texts()]
    # Every thumbnail's host is blocked here, yet each image's URL is there as text.
    urls = page.locator("td.laion-url").all_inner_texts()
    assert len(urls) == rows.count() and all(u.startswith("http") for u in urls)
    page.screenshot(path=OUTPUT / "search.png", full_page=True)
    assert (OUTPUT / "search.png").stat().st_size > 10_000


def test_page_forward_and_back_through_a_search(page):
    page.goto(page.url.rstrip("/") + "/-/search?q=painting")
    first = page.locator("td.laion-url").all_inner_texts()
    assert len(first) == 50 and page.get_by_role("link", name="Previous page").count() == 0
    page.get_by_role("link", name="Next page").first.click()
    page.wait_for_url("**after=**")
    second = page.locator("td.laion-url").all_inner_texts()
    assert second and second[0] not in first
    page.get_by_role("link", name="Previous page").first.click()
    page.wait_for_url("**before=**")
    assert page.locator("td.laion-url").all_inner_texts() == first
    assert page.get_by_role("link", name="Previous page").count() == 0


def open_host(page, link, shot: str) -> None:
    """Click a host's link: its page lists that host's images."""
    host = link.inner_text()
    link.click()
    page.wait_for_url("**/-/search?domain=**")
    assert page.locator("h1").inner_text() == f"Images from {host}"
    assert page.locator("td.laion-url").count() > 0
    page.screenshot(path=OUTPUT / shot, full_page=True)


def test_open_a_domain_from_the_results(page):
    page.goto(page.url.rstrip("/") + "/-/search?q=painting")
    open_host(
        page, page.locator("table.laion-results tbody tr td:nth-child(4) a").first, "domain.png"
    )


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


def test_look_up_an_image_url_and_a_website(page, published):
    (url,) = published.execute("SELECT url FROM images WHERE rowid = 321").fetchone()
    page.get_by_role("link", name="Is your work in it?").click()
    page.wait_for_url("**/-/lookup")
    page.locator("input[name=q]").fill(url)
    page.locator("form input[type=submit]").first.click()
    page.wait_for_url("**/-/lookup?q=**")
    assert page.locator("h2.laion-url-found").inner_text() == "1 image with exactly this URL"
    assert page.locator("table.laion-results td.laion-url").all_inner_texts() == [url]
    page.screenshot(path=OUTPUT / "lookup-url.png", full_page=True)

    page.locator("input[name=q]").fill("pinimg")
    page.locator("form input[type=submit]").first.click()
    page.wait_for_url("**q=pinimg**")
    top = page.locator("table.laion-hosts tbody tr td a").first
    assert top.inner_text().lower().endswith("pinimg.com")
    open_host(page, top, "lookup-host.png")


def test_an_image_page_shows_its_address_and_its_domain_not_the_noise(page):
    page.goto(page.url.rstrip("/") + "/-/search?q=painting")
    row = page.locator("table.laion-results tbody tr").first
    url = row.locator("td.laion-url").inner_text()
    domain = row.locator("td:nth-child(4) a").inner_text()
    row.locator("td:nth-child(2) a").first.click()
    page.wait_for_url("**/images/**")
    assert page.locator("td.col-url .laion-url").inner_text() == url  # the image is blocked
    assert page.locator("td.col-domain_id a").inner_text() == domain
    assert not page.locator("td.col-hash").is_visible()
    assert page.locator("th", has_text="__index_level_0__").count() == 0 or not (
        page.locator("th", has_text="__index_level_0__").first.is_visible()
    )
    page.screenshot(path=OUTPUT / "image.png", full_page=True)
