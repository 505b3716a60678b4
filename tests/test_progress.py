"""Progress bars: only when the command line turned them on, only for long work."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from roargit import progress


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(progress, "DELAY", 0.05)
    monkeypatch.setattr(progress, "TICK", 0.01)
    progress.enable()
    yield
    progress.enable(False)


def test_off_by_default_nothing_is_shown_and_no_thread_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not progress.enabled()
    with progress.Progress("storing", total=10) as p:
        p.update(10)
        assert p._thread is None
    assert capsys.readouterr() == ("", "")


def test_short_work_shows_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    progress.enable()
    try:
        with progress.Progress("hashing 3 file(s)") as p:
            assert p._thread is not None
    finally:
        progress.enable(False)
    assert capsys.readouterr() == ("", "")


def test_long_work_draws_a_bar_on_stderr_and_clears_it(
    shown: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress.Progress("storing 2 file(s)", total=2048) as p:
        p.update(1024)
        time.sleep(0.3)
        p.update(1024)
    out, err = capsys.readouterr()
    assert out == ""
    assert "storing 2 file(s)" in err and "1.00k/2.00k" in err
    assert "tqdm" in sys.modules


def test_without_a_total_the_label_and_elapsed_time(
    shown: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress.Progress("hashing 12 file(s)", unit="file"):
        time.sleep(0.3)
    assert "hashing 12 file(s)… 00:0" in capsys.readouterr().err


def test_as_a_callback_it_takes_done_and_total(shown: None) -> None:
    with progress.Progress("uploading") as p:
        p(5, 8)
        assert (p.done, p.total) == (5, 8)
