"""Shared layer building blocks.

ResidualBlock is the protocol every residual block follows (He et al. 2015): out = act(shortcut(x) + F(x)),
where the branch F learns the residual H(x) - x. Initialisers such as Fixup (Zhang et al. 2019) find
residual branches through `branch_layers()`, without knowing the model family.
"""

from __future__ import annotations

from torch import nn


class ResidualBlock(nn.Module):
    """Base class for residual blocks. Subclasses return their branch's weight layers, in order."""

    def branch_layers(self) -> list[nn.Module]:
        """The conv / linear layers along the residual branch F, input side first."""
        raise NotImplementedError
