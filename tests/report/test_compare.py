"""`trainlab compare`: the config diff, the seed groups, the confidence intervals against hand
computations, the page's size for 10 runs, the one-line errors, and the page in a real browser.

Three tiny runs are trained once per module (mlp on a generated 'mnist', as tests/conftest.py's
tiny_mnist makes it, 1 epoch): seeds 0 and 1, and seed 0 with another learning rate."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import write_tiny_mnist
from tests.report.browser import check_page, require_chromium
from trainlab.cli import main
from trainlab.config import load_config
from trainlab.errors import TrainlabError
from trainlab.report.compare import (
    compare_runs,
    group_curves,
    load_runs,
    seed_groups,
    student_t_cdf,
    t_interval,
    t_quantile,
    wilson_interval,
)
from trainlab.run import train
from trainlab.training.checkpoint import load_checkpoint, save_checkpoint

TINY = {"data.dataset": "mnist", "model.name": "mlp", "model.widths": [16], "train.epochs": 1,
        "data.val_size": 50, "data.batch_size": 64, "train.device": "cpu"}  # fmt: skip
RUNS = {"seed0": {}, "seed1": {"train.seed": 1}, "lr": {"optim.lr": 0.01}}
TEST_IMAGES = 100  # the generated test split
DISPLAY = 0.5e-4 + 1e-12  # the page prints 4 decimals; plus float64 rounding of a tie
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("compare")
    write_tiny_mnist(base / "data" / "mnist")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINLAB_DATA", str(base / "data"))
        for name, extra in RUNS.items():
            train(load_config("default", {**TINY, **extra}), base / name, progress=False)
    return {name: base / name for name in RUNS}


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory) -> Path:
    return compare_runs(list(runs.values()), tmp_path_factory.mktemp("page") / "compare.html")


class Tables(HTMLParser):
    """Each <table id=...> of a page as rows of cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: list[list[str]] | None = None
        self.cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.current = self.tables.setdefault(dict(attrs)["id"], [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.current is not None:
            self.current[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def interval(cell: str) -> tuple[float, float, float]:
    value, low, high = map(float, re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell).groups())
    return value, low, high


def test_the_diff_table_holds_exactly_the_keys_that_differ(page):
    rows = Tables(page.read_text()).tables["config-diff"]
    assert rows[0] == ["key", "seed0", "seed1", "lr"]
    assert {row[0]: row[1:] for row in rows[1:]} == {
        "optim.lr": ["0.1", "0.1", "0.01"],
        "train.seed": ["0", "1", "0"],
    }


def test_runs_that_differ_only_in_seed_form_a_group(runs, page):
    groups = seed_groups(load_runs(list(runs.values())))
    assert [[r.path for r in g] for g in groups] == [[runs["seed0"], runs["seed1"]], [runs["lr"]]]
    rows = Tables(page.read_text()).tables["final-metrics"]
    assert [row[0] for row in rows[1:]] == ["optim.lr=0.1 (seeds 0, 1)", "lr"]
    assert "Seed groups (configs equal but for train.seed): optim.lr=0.1 (seeds 0, 1)." in page.read_text()


def test_a_seed_groups_curve_is_the_mean_and_sample_std_of_its_runs(runs):
    group = seed_groups(load_runs(list(runs.values())))[0]
    curves = group_curves(group, "g")
    rows = [(run / "metrics.csv").read_text().splitlines() for run in (runs["seed0"], runs["seed1"])]
    header = rows[0][0].split(",")
    a, b = (dict(zip(header, map(float, r[1].split(",")))) for r in rows)  # epoch 1 of each run
    assert curves["epochs"] == [1]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert curves["values"][key] == pytest.approx([(a[key] + b[key]) / 2], rel=1e-12)
        assert curves["spread"][key] == pytest.approx([abs(a[key] - b[key]) / math.sqrt(2)], rel=1e-12)


def test_a_seed_groups_interval_is_the_t_interval_of_its_runs(runs, page):
    rows = Tables(page.read_text()).tables["final-metrics"]
    columns = rows[0]
    group = dict(zip(columns, rows[1]))
    assert group["interval"] == "t, 2 seeds"
    for name in ("test_accuracy", "test_loss", "best_val_accuracy"):
        a, b = summary(runs["seed0"])[name], summary(runs["seed1"])[name]
        # by hand: n = 2, s = |a - b| / sqrt(2), t(0.975, 1) = tan(0.475 pi) = 12.7062
        half = math.tan(0.475 * math.pi) * (abs(a - b) / math.sqrt(2)) / math.sqrt(2)
        expected = ((a + b) / 2, (a + b) / 2 - half, (a + b) / 2 + half)
        assert interval(group[name]) == pytest.approx(expected, abs=DISPLAY)


def test_one_runs_accuracy_gets_the_wilson_interval_of_the_test_set(runs, page):
    rows = Tables(page.read_text()).tables["final-metrics"]
    single = dict(zip(rows[0], rows[2]))
    p, n = summary(runs["lr"])["test_accuracy"], TEST_IMAGES
    assert sum(map(sum, summary(runs["lr"])["confusion_matrix"])) == n
    z2 = Z975**2
    centre, half = p + z2 / (2 * n), Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    expected = (p, (centre - half) / (1 + z2 / n), (centre + half) / (1 + z2 / n))
    assert interval(single["test_accuracy"]) == pytest.approx(expected, abs=DISPLAY)
    assert float(single["test_loss"]) == pytest.approx(summary(runs["lr"])["test_loss"], abs=DISPLAY)
    assert "test_accuracy: Wilson, 100 test images" in single["interval"]
    assert "test_loss: none (one run)" in single["interval"]


@pytest.mark.parametrize(
    "df, printed",  # a printed table of t(0.975, df), 4 decimals
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (10, 2.2281), (30, 2.0423)],
)
def test_t_quantile_matches_the_printed_table(df, printed):
    assert t_quantile(0.975, df) == pytest.approx(printed, abs=DISPLAY)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0, 4.0, 40.0])
def test_student_t_cdf_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(t):
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, rel=1e-12)  # Cauchy
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), rel=1e-12)


def test_t_interval_and_wilson_interval_by_hand():
    mean, low, high = t_interval([0.90, 0.92, 0.94])  # s = 0.02, n = 3, t(0.975, 2) = 4.302653
    half = 4.302652729749464 * 0.02 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.92, 0.92 - half, 0.92 + half), rel=1e-12)
    # 0 of 10: the lower end is exactly 0, the upper (z^2/n) / (1 + z^2/n) = 0.27754
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.384146 / 1.384146), abs=1e-6)
    low, high = wilson_interval(0.3, 50)
    assert wilson_interval(0.7, 50) == pytest.approx((1 - high, 1 - low), rel=1e-12)  # symmetric


def test_ten_runs_make_a_self_contained_page_under_2_mb(runs, tmp_path):
    """Ten runs, no two in one group (so 10 curves and 10 confusion matrices), of 30 epochs each."""
    base = json.loads((runs["seed0"] / "config.json").read_text())
    header = (runs["seed0"] / "metrics.csv").read_text().splitlines()[0]
    paths = []
    for i in range(10):
        run = shutil.copytree(runs["seed0"], tmp_path / f"run{i}")
        config = {**base, "optim": {**base["optim"], "lr": 0.01 * (i + 1)}}
        (run / "config.json").write_text(json.dumps(config))
        rows = [f"{e},{2 / e},{1 - 1 / (e + i)},0.1,{2.1 / e},{0.9 - 1 / (e + i)},0.5" for e in range(1, 31)]
        assert header == "epoch,train_loss,train_accuracy,lr,val_loss,val_accuracy,seconds"
        (run / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")
        paths.append(run)
    text = compare_runs(paths, tmp_path / "compare.html").read_text()
    assert (tmp_path / "compare.html").stat().st_size < 2_000_000
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 11 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=\"?(https?:|//)", text)
    assert len(Tables(text).tables["final-metrics"]) == 11  # a row per run: no groups


def test_cli_writes_the_page(runs, tmp_path, capsys):
    out = tmp_path / "c.html"
    assert main(["compare", str(runs["seed0"]), str(runs["lr"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"comparison of 2 runs: {out}"
    assert Tables(out.read_text()).tables["config-diff"][1:] == [["optim.lr", "0.1", "0.01"]]


def unfinished(run: Path, tmp: Path) -> Path:
    copy = shutil.copytree(run, tmp / "unfinished")
    (copy / "summary.json").unlink()
    return copy


def other_dataset(run: Path, tmp: Path) -> Path:
    copy = shutil.copytree(run, tmp / "other-dataset")
    (copy / "summary.json").write_text(json.dumps({**summary(run), "dataset": "fashion-mnist"}))
    return copy


def other_classes(run: Path, tmp: Path) -> Path:
    copy = shutil.copytree(run, tmp / "other-classes")
    tensors, meta = load_checkpoint(copy / "model.safetensors")
    save_checkpoint(copy / "model.safetensors", tensors, {**meta, "classes": list("abcdefghij")})
    return copy


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (unfinished, "not a finished run (no summary.json"),
        (other_dataset, "dataset 'fashion-mnist' differs from"),
        (other_classes, "confusion matrices cannot be set side by side"),
        (lambda run, tmp: tmp / "missing", "not a directory (expected a finished run directory)"),
        (lambda run, tmp: run.parent / "data", "no config.json, so not a run directory"),
    ],
)
def test_bad_input_is_one_line_naming_the_run(runs, tmp_path, capsys, make_bad, message):
    bad = make_bad(runs["seed0"], tmp_path)
    out = tmp_path / "c.html"
    assert main(["compare", str(runs["seed1"]), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"trainlab: error: {bad}: ") and message in err
    assert not out.exists()


def test_fewer_than_two_runs_or_one_run_twice_is_refused(runs, tmp_path, capsys):
    out = str(tmp_path / "c.html")
    assert main(["compare", str(runs["seed0"]), "--out", out]) == 2
    assert capsys.readouterr().err == (
        f"trainlab: error: compare needs at least 2 run directories, got 1 ({runs['seed0']})\n"
    )
    with pytest.raises(TrainlabError, match="given twice"):
        compare_runs([runs["seed0"], runs["seed0"]], out)


def test_the_page_in_a_real_browser(runs, page, tmp_path):
    require_chromium()
    result = check_page(page, tmp_path / "compare.png")
    assert result["console_errors"] == []
    assert result["external_requests"] == []
    assert result["images"] == 4 and result["images_decoded"] == 4  # curves + 3 confusion matrices
    width, height = result["screenshot_size"]
    assert width >= 1000 and height > 900  # the whole page, taller than one screen
    assert (tmp_path / "compare.png").stat().st_size > 10_000  # a picture, not a blank page
    text = result["text"]
    assert "optim.lr" in text and "optim.lr=0.1 (seeds 0, 1)" in text
    accuracy = f"{summary(runs['lr'])['test_accuracy']:.4f}"
    assert accuracy in text
