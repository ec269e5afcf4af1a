"""The digits loader against the CSV inside scikit-learn, its resize filter and its split."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
import torch

from trainlab.cli import main
from trainlab.data import digits
from trainlab.data.datasets import load_dataset
from trainlab.errors import DataError


def csv_rows() -> list[list[int]]:
    """The CSV as the csv module reads it: independent of the loader's numpy parsing."""
    with gzip.open(digits.digits_csv(), "rt") as f:
        return [[int(float(v)) for v in row] for row in csv.reader(f)]


def test_raw_pixels_match_the_csv_image_by_image():
    rows = csv_rows()
    pixels, labels = digits.read_digits_csv(digits.digits_csv())
    assert pixels.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert pixels.reshape(1797, -1).sum(1).tolist() == [sum(r[:64]) for r in rows]
    assert labels.tolist() == [r[64] for r in rows]
    assert 0 <= pixels.min() and pixels.max() == 16


def test_area_resize_keeps_each_images_mean_grey_level():
    """Area resampling averages the input over each output pixel's footprint, so the mean grey level is
    exact before rounding; rounding to uint8 moves each pixel by at most 1/2 (plus the float64 sum's
    rounding, far below that)."""
    rows = csv_rows()
    images = digits.resize_area(np.array([r[:64] for r in rows], dtype=np.uint8).reshape(-1, 8, 8))
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.uint8
    expected = torch.tensor([sum(r[:64]) for r in rows], dtype=torch.float64) / 64 * 255 / 16
    means = images.double().mean((1, 2, 3))
    assert (means - expected).abs().max() <= 0.5


def test_area_matrix_rows_are_footprint_averages():
    a = digits.area_matrix(8, 28)
    tol = 16 * torch.finfo(torch.float64).eps  # a handful of float64 roundings of values <= 3.5
    assert (a.sum(1) - 1).abs().max() <= tol and (a.sum(0) - 28 / 8).abs().max() <= 8 * tol
    assert a[0, 0] == 1 and abs(a[3, 0] - 0.5) <= tol and abs(a[3, 1] - 0.5) <= tol  # [0.857, 1.143)
    assert (a[:3, 1:] == 0).all()  # the first 3.5 output pixels see input pixel 0 only


def test_split_is_deterministic_stratified_and_covers_every_image():
    data = load_dataset("digits")
    _, labels = digits.read_digits_csv(digits.digits_csv())
    counts = np.bincount(labels, minlength=10)
    assert data.test_labels.bincount(minlength=10).tolist() == (counts // 5).tolist()
    assert data.train_labels.bincount(minlength=10).tolist() == (counts - counts // 5).tolist()
    assert data.image_shape == (1, 28, 28) and data.classes == [str(i) for i in range(10)]
    again = digits.load_digits()
    assert torch.equal(again[0], data.train_images) and torch.equal(again[3], data.test_labels)
    mask = digits.held_out_mask(labels)
    for c in range(10):  # every 5th image of each class, in file order
        assert np.nonzero(mask[labels == c])[0].tolist() == list(range(4, counts[c], 5))


def test_missing_scikit_learn_is_one_line_naming_the_extra(monkeypatch, capsys):
    real = digits.importlib.util.find_spec
    monkeypatch.setattr(digits.importlib.util, "find_spec", lambda n: None if n == "sklearn" else real(n))
    with pytest.raises(DataError, match=r"pip install 'trainlab\[digits\]'"):
        digits.load_digits()
    load_dataset.__globals__["load_digits_dataset"].cache_clear()
    assert main(["data", "info", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trainlab[digits]" in err
    monkeypatch.undo()
    load_dataset.__globals__["load_digits_dataset"].cache_clear()
