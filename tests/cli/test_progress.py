"""deepcrf.cli.progress: the bar counts only the work to do; the summary counts the rest."""

from __future__ import annotations

from tqdm import tqdm

from deepcrf.cli.progress import close_bars, progress, summary


def test_bar_total_excludes_skipped(capsys):
    assert list(progress(["a", "b"], "refine", skipped=5)) == ["a", "b"]
    err = capsys.readouterr().err
    assert "refine (5 already done)" in err and "2/2" in err and "/7" not in err
    assert list(progress(iter(range(3)), "x")) == [0, 1, 2]  # no length: no total


def test_summary():
    assert summary("refined", 3, 0, "out") == "refined 3 images into out"
    assert summary("refined", 1, 2, "out") == (
        "refined 1 images into out (2 already done, skipped; --overwrite redoes them)"
    )


def test_close_bars_ends_the_line(capsys):
    bar = tqdm(total=3, desc="work")
    bar.update()
    close_bars()
    assert bar not in tqdm._instances
    assert capsys.readouterr().err.endswith("\n")
