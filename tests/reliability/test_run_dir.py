"""Issue 12, run directories: no silent overwrite (#1), a second writer locked out (#1), a finished run
left as it is by a resume (#2), resume overrides applied or refused (#6), a resume from step 0 when no
checkpoint was written yet (#7), stale temporary files of killed writes removed (#8), and every output
created with the umask's permissions (#19).

Runs are tiny: the generated 'mnist' of tests/conftest.py (300 images), an MLP, one or two epochs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import trainlab
from trainlab.cli import main
from trainlab.io import atomic_write_bytes, create_temporary
from trainlab.training.callbacks import Callback
from trainlab.training.checkpoint import load_checkpoint

ARGS = ["--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--batch-size", "64",
        "--set", "data.val_size=50", "--device", "cpu", "--quiet"]  # fmt: skip
SMALL = {"data.dataset": "mnist", "model.name": "mlp", "train.epochs": 1, "data.batch_size": 64,
         "data.val_size": 50, "train.device": "cpu"}  # fmt: skip


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("trainlab: error: ") and "Traceback" not in err, err
    return err


def snapshot(run_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file's inode, mtime and bytes: an atomic rewrite, even of the same bytes, changes the inode."""
    files = sorted(p for p in run_dir.rglob("*") if p.is_file())
    return {
        str(p.relative_to(run_dir)): (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files
    }


def config_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


# ---- 1: a run directory is never overwritten silently ----------------------------------------------
class Boom(Callback):
    def on_train_begin(self, trainer):
        raise RuntimeError("boom")


def test_out_at_a_run_is_refused_and_overwrite_deletes_the_old_run_first(tiny_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, "--out", str(run))[0] == 0
    before = snapshot(run)

    code, _, err = cli(capsys, "train", *ARGS, "--set", "train.seed=1", "--out", str(run))
    assert code == 2 and str(run) in one_line_error(err) and "--overwrite" in err
    assert snapshot(run) == before  # not a byte touched

    # With overwrite, the old outputs go first: a new run that fails leaves none of the old model
    # and summary beside its own config.
    cfg = trainlab.load_config("default", {**SMALL, "train.seed": 1})
    with pytest.raises(RuntimeError, match="boom"):
        trainlab.train(cfg, run, overwrite=True, callbacks=[Boom()], progress=False)
    assert not (run / "model.safetensors").exists() and not (run / "summary.json").exists()
    assert not (run / "checkpoints").exists() and config_of(run)["train"]["seed"] == 1

    assert cli(capsys, "train", *ARGS, "--set", "train.seed=2", "--out", str(run), "--overwrite")[0] == 0
    assert json.loads((run / "summary.json").read_text())["seed"] == config_of(run)["train"]["seed"] == 2


def test_overwrite_never_empties_a_directory_that_is_not_a_run(tiny_mnist, tmp_path, capsys):
    (tmp_path / "site").mkdir()
    page = tmp_path / "site" / "report.html"
    page.write_text("<p>mine</p>")
    code, _, err = cli(capsys, "train", *ARGS, "--out", str(tmp_path / "site"), "--overwrite")
    assert code == 2 and "no config.json" in one_line_error(err)
    assert page.read_text() == "<p>mine</p>"


def test_a_second_writer_fails_with_one_line_while_the_first_trains(tiny_mnist, tmp_path, capsys):
    """The second `trainlab train` starts while the first is inside its training loop (from one of the
    first's callbacks), into the same directory, as a new run and as a resume: both are refused."""
    run = tmp_path / "run"
    attempts = []

    class SecondWriter(Callback):
        def on_train_begin(self, trainer):
            for args in (
                ["train", *ARGS, "--set", "train.seed=7", "--out", str(run)],
                ["train", "--resume", str(run)],
            ):
                capsys.readouterr()
                attempts.append((main(args), capsys.readouterr().err))

    trainlab.train(trainlab.load_config("default", SMALL), run, callbacks=[SecondWriter()], progress=False)
    for code, err in attempts:
        assert code == 2 and str(run) in one_line_error(err) and "another process is training" in err
    assert config_of(run)["train"]["seed"] == 0  # the config of the run that wrote the model
    _, meta = load_checkpoint(run / "model.safetensors")
    assert meta["config"] == config_of(run)


# ---- 2 (last point): resuming a finished run is a no-op that says so --------------------------------
def test_resuming_a_finished_run_writes_nothing_and_says_so(tiny_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, "--out", str(run))[0] == 0
    before = snapshot(run)
    code, out, _ = cli(capsys, "train", "--resume", str(run), "--quiet")
    assert code == 0 and "finished after 1 epochs" in out and "nothing written" in out
    assert snapshot(run) == before


def test_resuming_an_early_stopped_run_writes_nothing_even_with_more_epochs(tiny_mnist, tmp_path, capsys):
    # min_delta 1.0: no epoch after the first can improve the accuracy by that much, so it stops at 2
    stopping = ["--epochs", "4", "--set", "train.early_stopping=1", "--set", "train.min_delta=1.0"]
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, *stopping, "--out", str(run))[0] == 0
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
    before = snapshot(run)
    for more in ([], ["--epochs", "8"]):
        code, out, _ = cli(capsys, "train", "--resume", str(run), "--quiet", *more)
        assert code == 0 and "stopped early" in out and snapshot(run) == before


def test_an_early_stopped_run_killed_before_its_summary_resumes_without_training_more(
    tiny_mnist, tmp_path, capsys
):
    stopping = ["--epochs", "4", "--set", "train.early_stopping=1", "--set", "train.min_delta=1.0"]
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, *stopping, "--out", str(run))[0] == 0
    (run / "summary.json").unlink()  # as if killed after the final checkpoint, before the summary
    assert cli(capsys, "train", "--resume", str(run), "--quiet")[0] == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 2  # the stop is part of the checkpoint: epochs 3 and 4 never run
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2


# ---- 6: --resume applies the safe overrides, records them, and refuses the rest ----------------------
def test_resume_with_more_epochs_trains_on_and_records_them(tiny_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, "--out", str(run))[0] == 0
    code, out, _ = cli(capsys, "train", "--resume", str(run), "--epochs", "2", "--quiet")
    assert code == 0 and "train.epochs 1 -> 2" in out
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2
    assert config_of(run)["train"]["epochs"] == 2
    assert (run / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs
    _, meta = load_checkpoint(run / "model.safetensors")
    assert meta["config"]["train"]["epochs"] == 2
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--epochs", "1", "--quiet")
    assert code == 2 and "train.epochs=1" in one_line_error(err) and "begun 2 epochs" in err
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--model", "cnn"], "model.name='cnn'"),
        (["--set", "optim.lr=5"], "optim.lr=5"),
        (["--seed", "3"], "train.seed=3"),
        (["--set", "data.augment=hflip"], "data.augment='hflip'"),
        (["--out", "elsewhere"], "--out"),
        (["--recipe", "default"], "--recipe"),
        (["--overwrite"], "--overwrite"),
    ],
)
def test_resume_refuses_an_unsafe_override_with_one_line_naming_it(
    extra, named, tiny_mnist, tmp_path, capsys
):
    run = tmp_path / "run"
    assert cli(capsys, "train", *ARGS, "--out", str(run))[0] == 0
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--resume", str(run), "--quiet", *extra)
    assert code == 2 and named in one_line_error(err)
    assert snapshot(run) == before and not (tmp_path / "elsewhere").exists()


# ---- 7, 8: killed inside its first checkpoint's atomic write --------------------------------------
KILLED_IN_FIRST_CHECKPOINT = """
import os, signal, sys
import trainlab

real_replace = os.replace
def replace(src, dst):  # SIGKILL between writing the temporary file and renaming it over the target
    if os.path.basename(dst) == "last.safetensors":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
os.replace = replace
trainlab.train(trainlab.load_config("default", {overrides!r}), sys.argv[1], progress=False)
"""


def test_a_run_killed_in_its_first_checkpoint_write_resumes_from_step_0_and_cleans_up(
    tiny_mnist, tmp_path, capsys
):
    killed = tmp_path / "killed"
    script = KILLED_IN_FIRST_CHECKPOINT.format(overrides=SMALL)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-c", script, str(killed)], env=env, capture_output=True)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()[-2000:]
    assert (killed / "config.json").exists() and not (killed / "checkpoints" / "last.safetensors").exists()
    orphans = list((killed / "checkpoints").glob(".last.safetensors.*.tmp"))
    assert len(orphans) == 1  # the whole checkpoint, never renamed

    # the killed process held the lock: the kernel released it, so the resume is not locked out
    code, out, err = cli(capsys, "train", "--resume", str(killed), "--quiet")
    assert code == 0, err
    assert "training from step 0" in out and "removed 1 stale temporary file" in out
    assert not orphans[0].exists() and not list(killed.rglob("*.tmp"))

    reference = trainlab.train(trainlab.load_config("default", SMALL), tmp_path / "reference", progress=False)
    want = load_checkpoint(tmp_path / "reference" / "model.safetensors")[0]
    got = load_checkpoint(killed / "model.safetensors")[0]
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert json.loads((killed / "summary.json").read_text())["epochs_run"] == reference.summary["epochs_run"]


def test_a_new_run_removes_temporary_files_of_killed_writes_and_nothing_else(tiny_mnist, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    orphans = []
    for target in (run / "model.safetensors", run / "checkpoints" / "last.safetensors"):
        fd, tmp = create_temporary(target)  # what a SIGKILL after the write, before the rename, leaves
        os.write(fd, b"\0" * 1024)
        os.close(fd)
        orphans.append(tmp)
    legacy = run / ".summary.json.k2j3h4g5.tmp"  # tempfile.mkstemp's naming, before
    legacy.write_bytes(b"{")
    mine = [run / "notes.tmp", run / ".notes.tmp"]
    for path in mine:
        path.write_text("keep")
    trainlab.train(trainlab.load_config("default", SMALL), run, progress=False)
    assert not any(p.exists() for p in [*orphans, legacy])
    assert all(p.read_text() == "keep" for p in mine)


# ---- 19: outputs are created with the umask's permissions -------------------------------------------
@pytest.fixture
def umask():
    """Sets the process umask for the test; the previous one is restored."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask_like_open(mask, umask, tmp_path):
    umask(mask)
    atomic_write_bytes(tmp_path / "atomic", b"x")
    with open(tmp_path / "plain", "wb") as f:
        f.write(b"x")
    modes = [(tmp_path / name).stat().st_mode & 0o777 for name in ("atomic", "plain")]
    assert modes == [0o666 & ~mask] * 2


def test_every_run_output_and_fetched_file_is_readable_under_umask_027(
    umask, tiny_mnist, tmp_path, monkeypatch
):
    umask(0o027)
    run = tmp_path / "run"
    trainlab.train(trainlab.load_config("default", SMALL), run, progress=False)
    modes = {str(p.relative_to(run)): oct(p.stat().st_mode & 0o777) for p in run.rglob("*") if p.is_file()}
    assert {"model.safetensors", "summary.json", "config.json", "checkpoints/last.safetensors"} <= set(modes)
    assert set(modes.values()) == {oct(0o640)}, modes

    from trainlab.data import fetch

    source = tiny_mnist / "t10k-labels-idx1-ubyte.gz"  # `data fetch` from a file:// URL: no network
    checksum = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(fetch.SOURCES, "mnist", [fetch.Download(source.as_uri(), checksum)])
    cache = fetch.fetch_dataset("mnist", tmp_path / "cache")
    assert oct((cache / source.name).stat().st_mode & 0o777) == oct(0o640)
