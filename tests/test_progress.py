"""Progress bars: drawn on a terminal and advanced to their total; nothing at all with --quiet or when
stderr is not a terminal. TTY_COMPATIBLE=1 is rich's switch that makes pytest's captured stderr count as
a terminal, so that each quiet test is checked against the same run drawing its bar."""

from __future__ import annotations

import gzip
import hashlib
import io

import pytest
import torch
from rich.console import Console
from torch import nn

from trainlab.cli import main
from trainlab.data import fetch
from trainlab.experiments import common
from trainlab.progress import progress_bar, track
from trainlab.registry import Registry


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100)


@pytest.fixture
def stderr_is_a_terminal(monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")


def test_bar_advances_to_its_total_on_a_terminal():
    console = terminal()
    with progress_bar(5, "work", console=console) as advance:
        for _ in range(5):
            advance()
    drawn = console.file.getvalue()
    assert "work" in drawn and "5/5" in drawn


def test_track_yields_every_item_and_counts_them():
    console = terminal()
    assert list(track(["a", "b", "c"], "letters", console=console)) == ["a", "b", "c"]
    assert "3/3" in console.file.getvalue()


def test_disabled_or_not_a_terminal_draws_nothing():
    quiet, piped = terminal(), Console(file=io.StringIO(), force_terminal=False)
    for console, enabled in ((quiet, False), (piped, True)):
        assert list(track(range(3), "work", enabled, console=console)) == [0, 1, 2]
        assert console.file.getvalue() == ""


def test_a_bar_inside_a_bar_is_a_row_of_the_same_display():
    """One live display at a time (older rich refuses a second; two would overwrite each other's lines):
    the inner bar is drawn as a row of the outer one, not on its own console."""
    outer, inner = terminal(), terminal()
    with progress_bar(1, "outer", console=outer) as advance:
        assert list(track(range(2), "inner", console=inner)) == [0, 1]
        advance()
    assert "1/1" in outer.file.getvalue() and inner.file.getvalue() == ""


def test_a_failure_inside_a_bar_leaves_no_display_behind():
    with pytest.raises(ValueError), progress_bar(1, "failing", console=terminal()):
        raise ValueError
    console = terminal()  # drawn on its own: not as a row of the display that ended
    list(track(range(2), "next", console=console))
    assert "2/2" in console.file.getvalue()


def test_default_console_is_stderr_and_quiet_leaves_it_empty(capsys, stderr_is_a_terminal):
    list(track(range(4), "counting"))
    assert "4/4" in capsys.readouterr().err
    list(track(range(4), "counting", enabled=False))
    assert capsys.readouterr() == ("", "")


@pytest.fixture
def local_mnist(tmp_path, monkeypatch):
    """'mnist' served from a file:// URL."""
    payload = b"idx-bytes" * 1000
    (tmp_path / "a.gz").write_bytes(gzip.compress(payload))
    digest = hashlib.sha256(payload).hexdigest()
    source = fetch.Download((tmp_path / "a.gz").as_uri(), f"sha256-content:{digest}")
    monkeypatch.setitem(fetch.SOURCES, "mnist", [source])
    return tmp_path / "out"


def test_data_fetch_shows_a_download_bar_and_quiet_prints_only_its_result(
    local_mnist, capsys, stderr_is_a_terminal
):
    assert main(["data", "fetch", "mnist", "--dest", str(local_mnist)]) == 0
    assert "a.gz" in capsys.readouterr().err  # the file's bar
    assert main(["data", "fetch", "mnist", "--dest", str(local_mnist), "--quiet"]) == 0
    assert capsys.readouterr() == (f"mnist: downloaded and verified into {local_mnist}\n", "")
    assert (local_mnist / "a.gz").exists()


def tiny_experiment(ctx: common.Context) -> common.Outcome:
    """One logged arm and one training run of 2 epochs x 4 steps on random 4x4 images."""
    ctx.log("arm done")
    x = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(64) % 10
    split = common.Split(x, y, x[:16], y[:16])
    common.train_classifier(
        nn.Sequential(nn.Flatten(), nn.Linear(16, 10)), split, epochs=2, lr=0.1, batch_size=16
    )
    return common.Outcome({}, [common.check("ran", 1.0, ">= 1", True)], {})


def test_experiment_shows_a_bar_per_training_run_and_quiet_prints_only_its_result(
    tmp_path, capsys, monkeypatch, stderr_is_a_terminal
):
    monkeypatch.setattr(common, "EXPERIMENTS", Registry("experiment"))
    common.register_experiment("tiny", claim="a claim", lecture="none")(tiny_experiment)
    command = ["experiment", "tiny", "--quick", "--out", str(tmp_path), "--device", "cpu"]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "[tiny] arm done" in err and "[tiny] training run 1" in err and "8/8" in err
    assert main([*command, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("tiny: supported (") and out.endswith(f" -> {tmp_path}\n")
    assert out.count("\n") == 1


def test_a_real_quick_experiment_with_quiet_prints_only_its_result(tmp_path, capsys, stderr_is_a_terminal):
    assert (
        main(["experiment", "preprocessing", "--quick", "--out", str(tmp_path), "--device", "cpu", "--quiet"])
        == 0
    )
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("preprocessing: ") and out.count("\n") == 1
