"""Float32 tolerances that follow from the arithmetic, not from one run's observed difference.

Every float32 op rounds its exact result to within u = eps / 2 of its magnitude (eps = 2**-23, about
1.19e-7). Two computations of one value that each take at most `ops` rounded steps (a fused kernel and
op-by-op code, another SIMD width or BLAS kernel, another summation order) therefore differ by at most
about ops * eps * scale, where `scale` is the magnitude that the rounding is relative to: for a sum or
dot product of n terms, n roundings of at most sum |a_i b_i| each (Higham 2002, Accuracy and Stability
of Numerical Algorithms, section 3.1: |fl(sum) - sum| <= (n - 1) u sum |x_i|), so ops = n and
scale = sum |a_i b_i|, not the possibly cancelled result; for an elementwise chain, the values' own
magnitude. It is the worst case, not the typical sqrt(ops) random walk, so it holds on any machine.
For sums of many thousands of terms the worst case says little; there the tests use the probabilistic
bound of Higham & Mary (2019, SIAM J. Sci. Comput. 41(5)): a computed sum of n terms is within
10 sqrt(n) u sum |x_i| of the exact one, in any order of the additions, except with probability below
2 n exp(-50) (rounding errors modelled as independent and mean zero).
"""

from __future__ import annotations

import torch

EPS = torch.finfo(torch.float32).eps


def assert_float32_close(actual, expected, *, ops: float, scale) -> None:
    """|actual - expected| <= ops * EPS * scale element-wise; `scale` is a number or a tensor that
    broadcasts against the values (the magnitude each element's rounding is relative to)."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    diff = (actual - expected).abs()
    diff, bound = torch.broadcast_tensors(diff, ops * EPS * torch.as_tensor(scale).double())
    worst = (diff - bound).flatten().argmax()
    assert (diff <= bound).all(), (
        f"differ by {diff.flatten()[worst].item():.3g} at flat index {worst.item()}, over the float32 "
        f"bound {ops} eps x scale = {bound.flatten()[worst].item():.3g}"
    )
