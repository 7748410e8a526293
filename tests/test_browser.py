"""`tests/browser.py`: what headless Chromium measures in small hand-written pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import BrowserUnavailable, chromium_path, launch, page_facts, png_size, screenshot


def _page(tmp_path: Path, body: str, name: str = "page.html", head: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>",
                    encoding="utf-8")
    return path


def test_a_page_wider_than_the_viewport_is_reported_and_one_that_fits_is_not(browser, tmp_path) -> None:
    wide = _page(tmp_path, "<p>intro</p><div id='table' class='rows big' style='width:1600px'><span>x</span></div>",
                 "wide.html")
    facts = page_facts(browser, wide)
    assert facts.viewport_width == 1280 and facts.page_width > 1280 and not facts.fits
    assert [(o.tag, o.ident, o.scrolls) for o in facts.overflow] == [("div", "#table.rows.big", False)]
    assert facts.overflow[0].right == pytest.approx(1600 + 8, abs=1)  # the body's 8 px margin
    assert "div#table.rows.big" in str(facts.overflow[0])

    fitting = _page(tmp_path, "<p>intro</p><div style='max-width:100%;width:1600px'>fits</div>", "fits.html")
    facts = page_facts(browser, fitting)
    assert facts.fits and facts.overflow == [] and facts.page_width == 1280
    # the same page is measured at the width asked for
    narrow = page_facts(browser, _page(tmp_path, "<div style='width:900px'>x</div>", "900.html"), width=600)
    assert narrow.viewport_width == 600 and narrow.page_width > 600 and len(narrow.overflow) == 1
    assert page_facts(browser, tmp_path / "900.html").fits


def test_a_box_that_scrolls_sideways_is_reported_although_the_page_fits(browser, tmp_path) -> None:
    page = _page(tmp_path, "<div class='scroller' style='width:300px;overflow-x:auto'>"
                           "<div style='width:900px'>long</div></div><div style='overflow-x:auto'>short</div>")
    facts = page_facts(browser, page)
    assert facts.page_width == 1280 and not facts.fits
    assert [(o.tag, o.ident, o.scrolls) for o in facts.overflow] == [("div", ".scroller", True)]


def test_plots_come_back_with_their_ranges_ticks_and_size(browser, tmp_path) -> None:
    svg = ("<svg class='plot wide' data-title='Throughput by trial' data-x-min='0' data-x-max='12.5' data-y-min='-3'"
           " data-y-max='1e3' width='400' height='250' viewBox='0 0 400 250'>"
           "<text class='xtick' x='10' y='240'> 0 </text><text class='xtick' x='200' y='240'>12.5</text>"
           "<text class='ytick' x='0' y='10'>1000</text><text class='ytick' x='0' y='200'>-3</text>"
           "<text class='label'>not a tick</text></svg>"
           "<svg class='plot' width='100' height='50'></svg>"
           "<svg class='icon' data-title='ignored'></svg>")
    facts = page_facts(browser, _page(tmp_path, svg))
    first, bare = facts.plots
    assert first.title == "Throughput by trial"
    assert (first.x_min, first.x_max, first.y_min, first.y_max) == (0.0, 12.5, -3.0, 1000.0)
    assert first.xticks == ["0", "12.5"] and first.yticks == ["1000", "-3"]
    assert (first.width, first.height) == (400, 250)
    assert bare.title is None and (bare.x_min, bare.x_max, bare.y_min, bare.y_max) == (None,) * 4
    assert bare.xticks == bare.yticks == [] and (bare.width, bare.height) == (100, 50)


def test_the_verdict_text_and_page_errors_come_back(browser, tmp_path) -> None:
    page = _page(tmp_path, "<p id='verdict'>\n  Chose <b>batch_size=8</b>:\n\tthroughput  1.71x  </p>"
                           "<script>window.undefinedFunction()</script>")
    facts = page_facts(browser, page)
    assert facts.verdict == "Chose batch_size=8: throughput 1.71x"
    assert len(facts.console_errors) == 1 and "undefinedFunction" in facts.console_errors[0]
    quiet = page_facts(browser, _page(tmp_path, "<p>no verdict here</p>", "quiet.html"))
    assert quiet.verdict is None and quiet.console_errors == []


def test_a_screenshot_is_a_full_page_png_of_the_width_asked_for(browser, tmp_path) -> None:
    page = _page(tmp_path, "<div style='height:2000px;background:#39c'>tall</div>")
    png = screenshot(page, tmp_path / "shots" / "page.png", browser=browser)
    width, height = png_size(png)
    assert width == 1280 and height >= 2000  # the whole page, not just the 900 px viewport
    assert png_size(screenshot(page, tmp_path / "narrow.png", width=480, browser=browser))[0] == 480
    (tmp_path / "fake.png").write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(tmp_path / "fake.png")
    with pytest.raises(FileNotFoundError, match="no HTML page"):
        page_facts(browser, tmp_path / "missing.html")


def test_chromium_path_and_a_binary_that_is_not_there(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AUTOSCOUT_CHROMIUM", str(tmp_path / "no-chromium"))
    assert chromium_path() == str(tmp_path / "no-chromium")
    with pytest.raises(BrowserUnavailable, match="is not an executable file"), launch():
        pass
    monkeypatch.delenv("AUTOSCOUT_CHROMIUM")
    found = chromium_path()
    assert found is None or Path(found).name.startswith("chromium")
