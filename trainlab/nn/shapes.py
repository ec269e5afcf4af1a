"""Layer arithmetic without torch, shared by the torch models and the NumPy engine (trainlab.scratch)."""

from __future__ import annotations

from trainlab.errors import ConfigError


def conv_output_size(n: int, f: int, p: int = 0, s: int = 1) -> int:
    """Spatial output size of a convolution or pooling: (N + 2P - F) / stride + 1.

    N is the input size, F the filter size, P the padding on each side. Raises ConfigError when the
    filter does not tile the padded input exactly (the lectures' "doesn't fit" case, e.g. N=7, F=3, S=3).
    """
    span = n + 2 * p - f
    if span < 0 or span % s:
        raise ConfigError(
            f"conv output size (N + 2P - F) / stride + 1 = ({n} + 2*{p} - {f}) / {s} + 1 = {span / s + 1:g} "
            "is not a positive integer; change the padding, filter size or stride"
        )
    return span // s + 1
