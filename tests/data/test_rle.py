"""COCO RLE: masks survive encode -> decode, and the compressed strings are byte for byte pycocotools'."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from trainlab.data import rle
from trainlab.errors import DataError


def random_masks(seed: int, n: int, h: int, w: int) -> torch.Tensor:
    """Noise of random density for some masks, filled rectangles (long runs, small deltas) for others."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, h, w, generator=g) < torch.rand(n, 1, 1, generator=g)
    for i in range(0, n, 2):
        y1, y2 = sorted(torch.randint(0, h + 1, (2,), generator=g).tolist())
        x1, x2 = sorted(torch.randint(0, w + 1, (2,), generator=g).tolist())
        masks[i] = False
        masks[i, y1:y2, x1:x2] = True
    return masks


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 4), h=st.integers(1, 40), w=st.integers(1, 40))
def test_round_trip_gives_the_masks_back(seed, n, h, w):
    masks = random_masks(seed, n, h, w)
    encoded = rle.encode(masks)
    assert [r["size"] for r in encoded] == [[h, w]] * n
    assert torch.equal(rle.decode(encoded), masks)
    assert rle.area(encoded) == masks.sum((1, 2)).tolist()


@pytest.mark.parametrize("fill", [False, True])
def test_empty_and_full_masks(fill):
    masks = torch.full((2, 5, 7), fill)
    encoded = rle.encode(masks)
    # All background is one run of 35 zeros; all set is an empty run of zeros, then 35 ones.
    assert rle.decode([{"size": [5, 7], "counts": [0, 35] if fill else [35]}]).eq(fill).all()
    assert torch.equal(rle.decode(encoded), masks)
    assert rle.area(encoded) == [35 * fill] * 2


def test_column_major_runs_of_a_known_mask():
    mask = torch.tensor([[0, 1], [1, 1], [0, 0]], dtype=torch.bool)  # columns: 0 1 0 | 1 1 0
    assert torch.equal(rle.decode([{"size": [3, 2], "counts": [1, 1, 1, 2, 1]}])[0], mask)
    # Counts 1 1 1 2 1; from the fourth on, deltas to two before: 2 - 1 = 1, 1 - 1 = 0 -> "1111" + "0".
    assert rle.encode(mask[None])[0]["counts"] == "11110"


def test_large_counts_and_negative_deltas_round_trip():
    masks = torch.zeros(1, 300, 400, dtype=torch.bool)
    masks[0, 10:290, 5:6] = True  # one column: runs of thousands, then a shrinking run (negative delta)
    masks[0, 150:151, 200:390] = True
    assert torch.equal(rle.decode(rle.encode(masks)), masks)
    assert torch.equal(rle.decode([{**r, "counts": r["counts"].encode()} for r in rle.encode(masks)]), masks)


def test_counts_are_byte_equal_to_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask", reason="pycocotools (the coco extra) is not installed")
    for seed, (h, w) in enumerate([(64, 64), (1, 1), (17, 93), (200, 3)]):
        masks = random_masks(seed, 6, h, w)
        ours = rle.encode(masks)
        theirs = mask_api.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
        assert [r["counts"] for r in ours] == [r["counts"].decode("ascii") for r in theirs]
        assert [r["size"] for r in ours] == [list(r["size"]) for r in theirs]
        assert rle.area(ours) == mask_api.area(theirs).tolist()


@pytest.mark.parametrize(
    "bad",
    [
        {"size": [2, 2], "counts": [1, 2]},  # adds up to 3, not 4
        {"size": [2, 2], "counts": "1\x7f"},  # not a code character
        {"size": [2, 2], "counts": "1\u00e9"},  # not ASCII
        {"size": [2, 2], "counts": "2Q"},  # ends on a group that says "more"
        {"counts": "4"},
    ],
)
def test_malformed_rle_names_the_problem(bad):
    with pytest.raises(DataError, match="RLE 0"):
        rle.decode([bad])


def test_encode_rejects_a_single_mask_without_batch_axis():
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        rle.encode(torch.zeros(4, 4, dtype=torch.bool))
