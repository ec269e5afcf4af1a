"""report.html in a real browser (headless Debian chromium; skipped, with the reason, when absent): it
loads from file:// with no console errors and no request leaving the machine, every image decodes, and
a screenshot of the whole page is saved."""

from __future__ import annotations

from tests.report.browser import check_page, require_chromium

MAX_BYTES = 2 * 1024 * 1024  # the budget for a self-contained page


def test_report_loads_in_chromium_with_no_errors_and_every_image_decoded(tiny_run, tmp_path):
    require_chromium()
    page = tiny_run / "report.html"
    assert page.stat().st_size < MAX_BYTES
    result = check_page(page, tmp_path / "report.png")
    assert result["console_errors"] == []
    assert result["external_requests"] == []
    # step and epoch curves, confusion, 16 random thumbnails (and the mistakes), augmentation,
    # 4 diagnostics, filters, activation maps
    assert result["images"] == page.read_text().count("<img ") >= 26
    assert result["images_decoded"] == result["images"]
    width, height = result["screenshot_size"]
    assert 1000 <= width <= 1100 and height > 3000  # the whole page (less a scrollbar), not one screen
    assert (tmp_path / "report.png").stat().st_size > 100_000
    for heading in ("Results", "Per class", "Most confident mistakes", "Augmentation", "Diagnostics"):
        assert heading in result["text"]
    assert "First layer filters" in result["text"] and "Environment" in result["text"]
