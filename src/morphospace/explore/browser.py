"""Open report pages in headless Chromium and act on their maps as a user would, to check (and
time) what people see: scripts that run without errors, maps that render, a crop that appears on
hover, a gallery that appears on a click.

It drives the system's Chromium (Debian: ``apt-get install chromium``) through Playwright
(``pip install playwright``, the ``morphospace[browser]`` extra; no browser download needed).

Examples
--------
>>> chromium_path() is None or chromium_path().endswith(("chromium", "chrome", "chromium-browser"))
True
"""

from __future__ import annotations

import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from morphospace.errors import InputError

__all__ = ["chromium_path", "browser_missing", "PageCheck", "open_page", "screen_positions", "hover_point",
           "click_point", "lasso_select"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium (or Chrome) executable: ``$MORPHOSPACE_CHROMIUM`` if set, else the first of
    chromium, chromium-browser, google-chrome on the PATH; None when there is none."""
    configured = os.environ.get("MORPHOSPACE_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return next((found for name in _CANDIDATES if (found := shutil.which(name))), None)


def browser_missing() -> str | None:
    """Why pages cannot be opened here (no Chromium, no Playwright), or None when they can."""
    if chromium_path() is None:
        return "no Chromium on this machine (Debian: apt-get install chromium; or set MORPHOSPACE_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright, or the morphospace[browser] extra)"
    return None


@dataclass
class PageCheck:
    """A page open in Chromium (``page``: a Playwright page), the JavaScript errors seen so far
    (uncaught exceptions and console errors) and the seconds until every Bokeh root rendered."""

    page: object
    errors: list[str] = field(default_factory=list)
    load_seconds: float = float("nan")


_RENDERED = """() => window.Bokeh !== undefined && Bokeh.documents.length > 0 &&
  Bokeh.documents.every((d) => d.roots().every((r) => Bokeh.index.find_one(r) !== null))"""


@contextmanager
def open_page(path: str | os.PathLike, width: int = 1280, height: int = 1000,
              timeout_s: float = 60.0) -> Iterator[PageCheck]:
    """Open the HTML file ``path`` in headless Chromium and wait until its Bokeh maps (if any) have
    rendered; yields a :class:`PageCheck` and closes the browser after."""
    reason = browser_missing()
    if reason:
        raise InputError(f"cannot open {path} in a browser: {reason}")
    from playwright.sync_api import sync_playwright

    path = Path(path).resolve()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            check = PageCheck(page)
            page.on("pageerror", lambda error: check.errors.append(f"uncaught: {error}"))
            page.on("console", lambda message: check.errors.append(f"console: {message.text}")
                    if message.type == "error" else None)
            start = time.perf_counter()
            page.goto(path.as_uri(), timeout=timeout_s * 1000)
            if page.evaluate("() => window.Bokeh !== undefined"):
                page.wait_for_function(_RENDERED, timeout=timeout_s * 1000)
            check.load_seconds = time.perf_counter() - start
            yield check
        finally:
            browser.close()


_SCREEN_POSITIONS = """([name, xs, ys]) => {
  const doc = Bokeh.documents.find((d) => d.get_model_by_name(name) !== null);
  const view = Bokeh.index.find_one(doc.get_model_by_name(name));
  view.el.scrollIntoView({block: "center"});
  const box = view.canvas_view.el.getBoundingClientRect();
  return xs.map((x, i) => [box.left + view.frame.x_scale.compute(x), box.top + view.frame.y_scale.compute(ys[i])]);
}"""

_POINT_DATA = """([name, index]) => {
  const doc = Bokeh.documents.find((d) => d.get_model_by_name(name) !== null);
  const data = doc.get_model_by_name(name).renderers[0].data_source.data;
  return [data.x[index], data.y[index]];
}"""


def screen_positions(check: PageCheck, name: str, xy: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Page coordinates (pixels) of data coordinates ``xy`` on map ``name`` (scrolled into view)."""
    positions = check.page.evaluate(_SCREEN_POSITIONS, [name, [float(x) for x, _ in xy], [float(y) for _, y in xy]])
    return [(float(x), float(y)) for x, y in positions]


def _point(check: PageCheck, name: str, index: int) -> tuple[float, float]:
    return screen_positions(check, name, [check.page.evaluate(_POINT_DATA, [name, index])])[0]


def _model_text(check: PageCheck, name: str) -> str:
    return check.page.evaluate("(name) => { for (const d of Bokeh.documents) { const m = d.get_model_by_name(name);"
                               " if (m !== null) return m.text; } return ''; }", name)


def _wait_for_text(check: PageCheck, name: str, fragment: str, timeout_s: float) -> str:
    check.page.wait_for_function("([name, fragment]) => Bokeh.documents.some((d) => { const m = d.get_model_by_name("
                                 "name); return m !== null && m.text.includes(fragment); })", arg=[name, fragment],
                                 timeout=timeout_s * 1000)
    return _model_text(check, name)


def hover_point(check: PageCheck, name: str, index: int = 0, timeout_s: float = 10.0) -> tuple[str, float]:
    """Move the mouse onto point ``index`` of map ``name``; returns the ``src`` of the image its
    hover preview then shows (once visible on the page) and the seconds from the move until then."""
    x, y = _point(check, name, index)
    page = check.page
    page.mouse.move(x + 40, y + 40)
    start = time.perf_counter()
    page.mouse.move(x, y)
    text = _wait_for_text(check, f"{name}-preview", "<img", timeout_s)
    source = re.search(r'src="([^"]+)"', text)
    if source is None:
        return "", time.perf_counter() - start
    page.locator(f'img.map-preview[src="{source.group(1)}"]').first.wait_for(state="visible", timeout=timeout_s * 1000)
    return source.group(1), time.perf_counter() - start


def lasso_select(check: PageCheck, name: str, polygon: Sequence[tuple[float, float]], timeout_s: float = 10.0) -> str:
    """Pick the lasso tool of map ``name`` and draw ``polygon`` (data coordinates) with the mouse;
    returns the summary line of the gallery once it shows the selection."""
    page = check.page
    page.locator('[title="Lasso Select"]').first.click()
    path = screen_positions(check, name, [*polygon, polygon[0]])
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=5)
    page.mouse.up()
    text = _wait_for_text(check, f"{name}-gallery", "map-selection", timeout_s)
    return re.sub(r"<[^>]+>", "", text.split("</p>")[0]).strip()


def click_point(check: PageCheck, name: str, index: int = 0, timeout_s: float = 10.0) -> str:
    """Click point ``index`` of map ``name`` (the tap tool selects it); returns the summary line of
    the map's gallery once it shows the selection."""
    x, y = _point(check, name, index)
    check.page.mouse.click(x, y)
    text = _wait_for_text(check, f"{name}-gallery", "map-selection", timeout_s)
    return re.sub(r"<[^>]+>", "", text.split("</p>")[0]).strip()
