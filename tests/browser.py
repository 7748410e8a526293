"""Headless Chromium for the tests: open a local HTML page at a given width and measure it in the page.

The browser is Debian's Chromium (``/usr/bin/chromium``, installed by ``scripts/install_browser.sh``;
``$AUTOSCOUT_CHROMIUM`` names another binary), driven through Playwright for Python with
``executable_path``: ``playwright install`` (which downloads a browser) is never needed. The suite's
``browser`` fixture (``tests/conftest.py``) launches it once per session.

Example::

    with launch() as browser:
        facts = page_facts(browser, "report.html", width=800)
        assert not facts.overflow, facts.overflow
        screenshot("report.html", "report.png", width=800, browser=browser)

``python -m tests.browser PAGE.html [OUT.png] [--width N]`` prints the facts of a page (and saves a
full-page screenshot), to look at a report by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "AUTOSCOUT_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync")
"""Passed to Chromium besides the headless flag Playwright adds; Playwright gives it a fresh user-data dir."""
MAX_OVERFLOW = 10


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright is missing, or Chromium does not start; the message says which and what to do."""


def chromium_path() -> str | None:
    """The Chromium binary to drive: ``$AUTOSCOUT_CHROMIUM`` (even if it does not exist, so that a wrong value
    is reported rather than silently replaced), else ``/usr/bin/chromium``, else ``chromium`` on the PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named
    if os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium")


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (a Playwright ``Browser``) for the block; raises `BrowserUnavailable`."""
    path = chromium_path()
    if path is None:
        raise BrowserUnavailable(f"no Chromium: {DEFAULT_CHROMIUM} is missing and none is on the PATH; run "
                                 f"`bash scripts/install_browser.sh`, or set ${CHROMIUM_ENV} to a Chromium binary")
    if not os.access(path, os.X_OK):
        raise BrowserUnavailable(f"Chromium {path!r} (from ${CHROMIUM_ENV}) is not an executable file")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable(f"Playwright for Python is not installed ({exc}); "
                                 "run `.venv/bin/pip install -e \".[test]\"`") from exc
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, headless=True, args=list(LAUNCH_ARGS))
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BrowserUnavailable(f"Chromium {path} did not start: {first}") from exc
        try:
            yield browser
        finally:
            browser.close()


@dataclass(frozen=True)
class Overflow:
    """An element wider than the viewport (`right` > the viewport's width) or one that scrolls sideways
    itself (`scrolls`: an ``overflow-x: auto|scroll`` box whose content is wider than the box)."""

    tag: str
    ident: str
    """``#id`` and/or ``.class.names`` ('' when it has neither)."""
    right: float
    scrolls: bool

    def __str__(self) -> str:
        why = "scrolls sideways" if self.scrolls else f"right edge at {self.right:.0f} px"
        return f"<{self.tag}{self.ident}> {why}"


@dataclass(frozen=True)
class Plot:
    """One ``svg.plot``: its declared title and axis ranges, its tick labels and its size on the page."""

    title: str | None
    x_min: float | None
    x_max: float | None
    y_min: float | None
    y_max: float | None
    xticks: list[str]
    yticks: list[str]
    width: float
    height: float


@dataclass(frozen=True)
class PageFacts:
    """What `page_facts` measured in a page."""

    page_width: int
    """``document.documentElement.scrollWidth``: more than `viewport_width` means a sideways scroll bar."""
    viewport_width: int
    overflow: list[Overflow]
    plots: list[Plot]
    verdict: str | None
    """The text of ``#verdict``, whitespace collapsed; None when the page has no such element."""
    console_errors: list[str] = field(default_factory=list)
    """JavaScript errors the page raised (``pageerror`` events)."""

    @property
    def fits(self) -> bool:
        """No sideways scroll bar and no element past the viewport's right edge or scrolling sideways."""
        return self.page_width <= self.viewport_width and not self.overflow

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_MEASURE = """
(maxOverflow) => {
  const vw = window.innerWidth;
  const ident = (el) => {
    let s = el.id ? '#' + el.id : '';
    const cls = typeof el.className === 'string' ? el.className : (el.getAttribute('class') || '');
    for (const c of cls.split(/\\s+/)) if (c) s += '.' + c;
    return s;
  };
  const overflow = [];
  const listed = [];
  for (const el of document.body ? document.body.querySelectorAll('*') : []) {
    if (overflow.length >= maxOverflow) break;
    if (listed.some((p) => p.contains(el))) continue;  // the outermost offender only
    const rect = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    const scrolls = (style.overflowX === 'auto' || style.overflowX === 'scroll')
      && el.scrollWidth > el.clientWidth + 1;
    const right = rect.right + window.scrollX;
    if ((rect.width > 0 && right > vw + 0.5) || scrolls) {
      overflow.push({tag: el.tagName.toLowerCase(), ident: ident(el), right: right, scrolls: scrolls});
      listed.push(el);
    }
  }
  const num = (el, name) => {
    const v = el.getAttribute(name);
    if (v === null || v.trim() === '') return null;
    const x = Number(v);
    return Number.isFinite(x) ? x : null;
  };
  const texts = (el, sel) => Array.from(el.querySelectorAll(sel), (t) => t.textContent.trim());
  const plots = Array.from(document.querySelectorAll('svg.plot'), (svg) => {
    const r = svg.getBoundingClientRect();
    return {title: svg.getAttribute('data-title'), x_min: num(svg, 'data-x-min'), x_max: num(svg, 'data-x-max'),
            y_min: num(svg, 'data-y-min'), y_max: num(svg, 'data-y-max'),
            xticks: texts(svg, 'text.xtick'), yticks: texts(svg, 'text.ytick'), width: r.width, height: r.height};
  });
  const v = document.getElementById('verdict');
  return {page_width: document.documentElement.scrollWidth, viewport_width: vw, overflow: overflow, plots: plots,
          verdict: v === null ? null : v.textContent.replace(/\\s+/g, ' ').trim()};
}
"""


@contextlib.contextmanager
def open_page(browser: Any, html_path: str | Path, width: int = 1280,
              height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """(a Playwright page showing `html_path` at `width` x `height`, the list its JavaScript errors go to);
    the page is closed on leaving."""
    path = Path(html_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no HTML page at {path}")
    context = browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(path.as_uri(), wait_until="load")
        yield page, errors
    finally:
        context.close()


def page_facts(browser: Any, html_path: str | Path, width: int = 1280, height: int = 900) -> PageFacts:
    """Open `html_path` (a local file) in `browser` (the ``browser`` fixture, or `launch()`) at a viewport of
    `width` x `height` CSS pixels and measure it: its width, what sticks out, its plots, its verdict and the
    JavaScript errors it raised."""
    with open_page(browser, html_path, width, height) as (page, errors):
        raw = page.evaluate(_MEASURE, MAX_OVERFLOW)
    return PageFacts(page_width=int(raw["page_width"]), viewport_width=int(raw["viewport_width"]),
                     overflow=[Overflow(**o) for o in raw["overflow"]], plots=[Plot(**p) for p in raw["plots"]],
                     verdict=raw["verdict"], console_errors=list(errors))


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1280, height: int = 900, *,
               browser: Any = None) -> Path:
    """A full-page PNG of `html_path` at a viewport `width` pixels wide (one CSS pixel per image pixel), saved at
    `png_path`; launches Chromium for the call unless `browser` is given."""
    if browser is None:
        with launch() as own:
            return screenshot(html_path, png_path, width, height, browser=own)
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_page(browser, html_path, width, height) as (page, _errors):
        page.screenshot(path=str(out), full_page=True, type="png")
    return out


def png_size(png_path: str | Path) -> tuple[int, int]:
    """(width, height) from a PNG's header; raises ValueError for a file that is not a PNG."""
    head = Path(png_path).read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{png_path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure a local HTML page in headless Chromium.")
    parser.add_argument("page")
    parser.add_argument("png", nargs="?", help="also save a full-page screenshot here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    with launch() as browser:
        facts = page_facts(browser, args.page, args.width, args.height)
        if args.png:
            screenshot(args.page, args.png, args.width, args.height, browser=browser)
    print(json.dumps(facts.to_json(), indent=2))
    return 0 if facts.fits and not facts.console_errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
