"""COCO run-length encoding (RLE) of binary masks: the format COCO's instances JSON and results files use.

A mask of H x W pixels is read in column-major order (down the first column, then the next) and written as
the lengths of its alternating runs, zeros first: `[3, 2, 5]` is 3 background pixels, 2 mask pixels, 5
background pixels, and a mask whose first pixel is set starts with a run of 0 zeros. The *compressed*
form stores those counts as a string (Lin et al. 2014, "Microsoft COCO: Common Objects in Context"; the
format as pycocotools' maskApi defines it):

- from the fourth count on, a count is stored as its difference to the count two before it (the run of
  the same value one period earlier), so regular shapes give small numbers, possibly negative;
- each number is cut into 5-bit groups, least significant first, and a group becomes the character
  `48 + group + 32 * more`, where `more` says another group follows. The last group's bit 4 is the sign
  (two's complement), so the groups stop once the rest is 0 (bit 4 clear) or -1 (bit 4 set).

`encode` computes the runs of a whole batch at once and codes every run's characters in one array pass;
`decode` inverts it, and also reads the uncompressed form (`counts` a list of ints).
"""

from __future__ import annotations

import numpy as np
import torch

from trainlab.errors import DataError

GROUPS = 7  # 5-bit groups enough for any count of a mask below 2**34 pixels, deltas included


def _runs(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of all (H, W) masks, column-major, each mask's starting with a (possibly empty) run of
    zeros: (counts (R,) int64 of every mask in turn, mask (R,) the mask each run belongs to)."""
    n, h, w = masks.shape
    flat = masks.transpose(0, 2, 1).reshape(n, h * w)
    # A leading 0 column makes the first run always zeros: a set first pixel becomes a change at 0.
    padded = np.concatenate([np.zeros((n, 1), bool), flat], axis=1)
    rows, cols = np.nonzero(padded[:, 1:] != padded[:, :-1])  # cols: flat index where a new run starts
    # Each run ends where the next starts, and a mask's last run at H * W; a stable sort by mask keeps
    # the ends in order with the H * W appended after each mask's changes.
    mask = np.concatenate([rows, np.arange(n)])
    order = np.argsort(mask, kind="stable")
    mask, ends = mask[order], np.concatenate([cols, np.full(n, h * w)])[order]
    starts = np.concatenate([[0], ends[:-1]])
    starts[np.flatnonzero(np.diff(mask, prepend=-1))] = 0
    return (ends - starts).astype(np.int64), mask


def _to_strings(counts: np.ndarray, mask: np.ndarray, n: int) -> list[str]:
    """The compressed strings of n masks' counts (from _runs), all runs coded in one pass."""
    first = np.flatnonzero(np.diff(mask, prepend=-1))  # each mask's first run
    position = np.arange(counts.size) - first[mask]
    values = counts.copy()
    later = np.flatnonzero(position >= 3)
    values[later] -= counts[later - 2]  # delta to the count two before, from the fourth on
    shifts = 5 * np.arange(GROUPS)
    groups = (values[:, None] >> shifts) & 0x1F  # (R, GROUPS)
    rest = values[:, None] >> (shifts + 5)  # what is left after each group
    more = np.where(groups & 0x10, rest != -1, rest != 0)
    length = np.argmax(~more, axis=1) + 1  # groups up to the first one without `more`
    used = np.arange(GROUPS) < length[:, None]
    text = (48 + groups + 32 * more)[used].astype(np.uint8).tobytes().decode("ascii")  # row-major
    bounds = np.concatenate([[0], np.cumsum(np.bincount(mask, weights=length, minlength=n).astype(np.int64))])
    return [text[a:b] for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)]


def _from_string(text: str | bytes, where: str) -> np.ndarray:
    """The counts (int64) of one compressed string."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    codes = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if codes.size and (codes.min() < 0 or codes.max() > 63 or codes[-1] & 0x20):
        raise DataError(f"{where}: counts is not a COCO compressed RLE string (characters '0' to 'o')")
    last = (codes & 0x20) == 0  # the group that ends a number
    number = np.concatenate([[0], np.cumsum(last)[:-1]])  # which number each group belongs to
    first = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    position = np.arange(codes.size) - first[number]
    values = np.zeros(int(last.sum()), np.int64)
    np.add.at(values, number, (codes & 0x1F) << (5 * position))
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0
    values[negative] |= -1 << (5 * (position[ends][negative] + 1))  # sign-extend
    counts = values.copy()
    # Undo the delta coding: from the fourth on, count i = delta i + count i-2, i.e. a running sum over
    # each parity class, starting at count 2 (evens) and count 1 (odds).
    counts[2::2] = np.cumsum(values[2::2])
    counts[1::2] = np.cumsum(values[1::2])
    return counts


def _size(rle: dict, where: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
        rle["counts"]
    except (KeyError, TypeError, ValueError):
        raise DataError(
            f"{where}: expected a dict with 'size': [H, W] and 'counts', got {rle!r:.80}"
        ) from None
    return h, w


def _counts(rle: dict, where: str) -> np.ndarray:
    h, w = _size(rle, where)
    raw = rle["counts"]
    counts = _from_string(raw, where) if isinstance(raw, str | bytes) else np.asarray(raw, np.int64)
    if (counts < 0).any() or counts.sum() != h * w:
        raise DataError(
            f"{where}: run lengths must be >= 0 and add up to H * W = {h * w}, got {counts.sum()}"
        )
    return counts


def encode(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """bool (N, H, W) -> [{"size": [H, W], "counts": str}, ...], COCO's compressed RLE, one per mask."""
    array = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    array = array.astype(bool, copy=False)
    if array.ndim != 3:
        raise DataError(f"rle.encode: expected masks of shape (N, H, W), got {tuple(array.shape)}")
    n, h, w = array.shape
    return [{"size": [h, w], "counts": text} for text in _to_strings(*_runs(array), n)]


def decode(rles: list[dict]) -> torch.Tensor:
    """[{"size": [H, W], "counts": str | bytes | list[int]}, ...] -> bool (N, H, W); all of one size."""
    if not rles:
        raise DataError("rle.decode: expected at least one RLE (the size of an empty batch is unknown)")
    sizes = {_size(rle, f"RLE {i}") for i, rle in enumerate(rles)}
    if len(sizes) > 1:
        raise DataError(f"rle.decode: all masks must have one size, got {sorted(sizes)}")
    (h, w) = sizes.pop()
    out = np.empty((len(rles), h * w), bool)
    for i, rle in enumerate(rles):
        counts = _counts(rle, f"RLE {i}")
        out[i] = np.repeat(np.arange(counts.size) % 2 == 1, counts)
    return torch.from_numpy(out.reshape(len(rles), w, h).transpose(0, 2, 1).copy())


def area(rles: list[dict]) -> list[int]:
    """The number of set pixels of each mask: the sum of its odd-numbered runs."""
    return [int(_counts(rle, f"RLE {i}")[1::2].sum()) for i, rle in enumerate(rles)]
