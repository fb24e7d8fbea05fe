"""Browser helpers for the dashboards' pages: logging in at /login/, and checking that a
page fits a phone's width.

    dashboard_login(page, live_server.url, "bob", "bob-password-123")
    assert_fits(page, f"{live_server.url}/dashboard/")   # 390 px, then 1280 px
"""

from __future__ import annotations

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# Widths of the main content and of the whole document, as the browser laid them out.
_WIDTHS = """() => {
    const main = document.querySelector("main");
    const root = document.documentElement;
    return {
        main: main ? [main.scrollWidth, main.clientWidth] : null,
        document: [root.scrollWidth, root.clientWidth],
    };
}"""


def dashboard_login(page, base_url: str, username: str, password: str) -> None:
    """Log in through the login page; the page is then wherever the login sent it."""
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("#login-form button[type=submit]")
    assert "/login/" not in page.url, page.locator(".errornote").all_inner_texts()


def assert_no_horizontal_scroll(page) -> None:
    """Neither the `<main>` element nor the document is wider than the viewport."""
    widths = page.evaluate(_WIDTHS)
    assert widths["main"] is not None, f"{page.url} has no <main> element"
    main_scroll, main_client = widths["main"]
    assert main_scroll <= main_client, f"{page.url}: <main> scrolls sideways: {widths}"
    document_scroll, document_client = widths["document"]
    assert document_scroll <= document_client, f"{page.url}: the page scrolls sideways: {widths}"


def assert_fits(page, url: str, sizes=(PHONE, DESKTOP)) -> None:
    """Open `url` at each size (a phone's 390 px, then 1280 px) and check that nothing
    scrolls sideways; the page stays at the last size."""
    for size in sizes:
        page.set_viewport_size(size)
        page.goto(url)
        page.wait_for_load_state("load")
        assert_no_horizontal_scroll(page)
