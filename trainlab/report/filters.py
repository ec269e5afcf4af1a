"""What the convolution lectures draw (CS231n, "Convolutional Neural Networks"): the first layer's
learned filters, and the activation maps of one image at each stage ("6 filters give 6 activation
maps"). A stage is a run of consecutive modules whose (B, C, H, W) outputs keep one spatial size; its map
is the last such output, so a stage ends where the network pools or strides down."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainlab.report.figures import plt

MAX_MAPS = 16  # channels drawn per stage


def first_conv_weight(model: nn.Module) -> torch.Tensor | None:
    """The weight (C_out, C_in, kH, kW) of the first module, in definition order, that has a 4-D one."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 4:
            return weight.detach().float().cpu()
    return None


def unit_range(t: torch.Tensor) -> torch.Tensor:
    """t scaled to [0, 1] by its own minimum and maximum (a constant tile becomes 0)."""
    return (t - t.min()) / (t.max() - t.min()).clamp_min(1e-12)


def montage(tiles: list[torch.Tensor], cols: int) -> torch.Tensor:
    """The tiles (H, W) or (H, W, 3), each in [0, 1], in a grid of `cols` columns with a one-pixel gap of
    NaN (drawn as the background): one image, so a figure draws one axis instead of one per tile (a
    report's 100 axes took over a second)."""
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles[0].shape[:2]
    grid = torch.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles[0].shape[2:]), float("nan"))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return grid


def filters_figure(weight: torch.Tensor):
    """One tile per filter, each scaled to its own range; RGB when the layer reads 3 channels, else
    channel 0 in grey."""
    count = weight.shape[0]
    cols = min(count, 16)
    rows = math.ceil(count / cols)
    rgb = weight.shape[1] == 3
    tiles = [unit_range(w).permute(1, 2, 0) if rgb else unit_range(w[0]) for w in weight]
    grid = montage(tiles, cols)
    if rgb:  # NaN has no colour in an RGB image: the gaps become white
        grid = grid.nan_to_num(1.0)
    fig, ax = plt.subplots(figsize=(0.7 * cols, 0.7 * rows + 0.4))
    ax.axis("off")
    ax.imshow(grid.numpy(), cmap=None if rgb else "gray", vmin=0, vmax=1, interpolation="nearest")
    size = "x".join(map(str, weight.shape[2:]))
    fig.suptitle(f"First layer: {count} filters of {size}", fontsize=9)
    return fig


@torch.no_grad()
def stage_activations(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(module name, activation (C, H, W)) at the end of each stage, for one input x (1, C, H, W)."""
    outputs: list[tuple[str, torch.Tensor]] = []

    def record(name):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                outputs.append((name, output[0].detach().float().cpu()))

        return hook

    named = [(name, m) for name, m in model.named_modules() if name]
    handles = [m.register_forward_hook(record(name)) for name, m in named]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    stages: list[tuple[str, torch.Tensor]] = []
    for name, out in outputs:  # hooks fire as modules finish: a container after its children
        if stages and stages[-1][1].shape[1:] == out.shape[1:]:
            stages[-1] = (name, out)
        else:
            stages.append((name, out))
    return stages


def activations_figure(image: torch.Tensor, stages: list[tuple[str, torch.Tensor]]):
    """The input image, then one row per stage with up to MAX_MAPS of its channels, each map scaled to
    its own range."""
    fig, axes = plt.subplots(
        len(stages) + 1, 1, figsize=(0.9 * MAX_MAPS, 1.05 * (len(stages) + 1)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    picture = image.cpu().float()
    picture = picture[0] if picture.shape[0] == 1 else picture[:3].permute(1, 2, 0) / 255
    axes[0, 0].imshow(picture.numpy(), cmap="gray", interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=7, loc="left")
    for (ax,), (name, maps) in zip(axes[1:], stages):
        channels, h, w = maps.shape
        grid = montage([unit_range(m) for m in maps[:MAX_MAPS]], MAX_MAPS)
        ax.imshow(grid.numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        ax.set_title(f"{name}: {channels}x{h}x{w}", fontsize=7, loc="left", parse_math=False)
    return fig
