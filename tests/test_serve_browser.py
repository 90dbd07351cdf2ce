"""The drawing pad of mnist-kit serve in headless Chromium: digits drawn with mouse events (press, move,
release) are read correctly, waiting in real time; black ink, a photo chosen and one dropped, and touch
events on a phone-sized page too."""

from __future__ import annotations

import pytest

from helpers import Server, photo, render_digit, script

missing = script("browser").missing

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(missing() is not None, reason=missing() or "")]


def test_digits_drawn_on_the_pad_are_read_correctly(digit_export, tmp_path):
    check_pad = script("pad_check").check_pad

    shot, dropped = tmp_path / "shot.jpg", tmp_path / "dropped.png"
    photo(render_digit(4)).save(shot, quality=90)
    photo(render_digit(7)).save(dropped)
    s = Server("--model", digit_export)
    try:
        results = check_pad(s.url, digits=(0, 1, 2, 3, 4, 7), dark_digits=(7, 2), photos=[(shot, 4), (dropped, 7)],
                            touch_digits=(7, 0),
                            screenshot=tmp_path / "pad.png")
    finally:
        assert s.stop() == 0
    live, *read, requests = results
    # while the button is still down, the drawing so far was sent and answered (debounced live prediction)
    assert live["live"]["sent"] > live["live"]["sent_before"] and live["live"]["answered"] == str(live["live"]["sent"])
    assert [r["read"] for r in read] == [str(r["drawn"]) for r in read], read
    for r in read:
        assert r["input_width"] == 28  # the 28x28 image the model saw is shown
        assert len(r["bars"]) == 10 and r["bars"][0][0] == r["read"]  # every class as a bar, best first
    assert [r["corner"] for r in read if r.get("ink") == "dark"] == [[255, 255, 255, 255]] * 2  # black on white
    assert [r["drawn"] for r in read if r.get("touch")] == [7, 0]  # with a finger on a phone-sized page
    photos = [r for r in read if "photo" in r]  # chosen, then dropped on the page
    assert [r["photo"] for r in photos] == ["shot.jpg", "dropped.png"] and all(r["shown"] for r in photos)
    assert requests["foreign_requests"] == [] and requests["requests"] > 0  # nothing but this server
    assert (tmp_path / "pad.png").stat().st_size > 10_000
