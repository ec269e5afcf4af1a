"""Universal approximation, width against depth, and why the non-linearity matters.

1. A sum of six ReLUs, Z(x) = -n1 - n2 - n3 + n4 + n5 + n6 with n_i = max(0, w_i x + b_i), is exactly a
   1-6-1 ReLU network: a piecewise-linear function with a kink at each -b_i / w_i.
2. One hidden layer of width 1 ... 1024 fits a 1-D function better as it widens (Cybenko 1989; Hornik
   1991), but at an equal number of parameters a deeper net fits it better (Telgarsky 2016; Eldan &
   Shamir 2016).
3. Without a non-linearity, any depth computes a linear map: on two concentric rings a linear-activation
   net draws one straight boundary; the ReLU net separates the rings.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from trainlab.experiments.common import Context, Outcome, check, register_experiment

# (w_i, b_i): -n1, -n2, -n3 bend the line down at x = 0.5, 1.5, 2.5; +n4, +n5, +n6 up at 0, 1, 2: a zig-zag
NEURONS = [(4.0, -2.0), (4.0, -6.0), (2.0, -5.0), (2.0, 0.0), (4.0, -4.0), (4.0, -8.0)]
SIGNS = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]


def six_relu_net() -> nn.Sequential:
    """The 1-6-1 network whose output is Z(x) = -n1 - n2 - n3 + n4 + n5 + n6."""
    net = nn.Sequential(nn.Linear(1, 6), nn.ReLU(), nn.Linear(6, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[w] for w, _ in NEURONS]))
        net[0].bias.copy_(torch.tensor([b for _, b in NEURONS]))
        net[2].weight.copy_(torch.tensor([SIGNS]))
    return net


def target(x: torch.Tensor) -> torch.Tensor:
    """A wiggly 1-D function on [-1, 1]: three periods of a sine under a Gaussian envelope, plus a kink."""
    return torch.sin(3 * math.pi * x) * torch.exp(-2 * x.square()) + 0.5 * x.abs()


def mlp(width: int, hidden_layers: int, act: type[nn.Module] = nn.ReLU, d_in: int = 1, d_out: int = 1):
    layers, fan_in = [], d_in
    for _ in range(hidden_layers):
        layers += [nn.Linear(fan_in, width), act()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, d_out))


def deep_width_for(params: int, hidden_layers: int) -> int:
    """The width of a `hidden_layers`-deep 1-d-...-d-1 net with about `params` parameters."""
    count = lambda d: 2 * d + (hidden_layers - 1) * (d * d + d) + d + 1  # noqa: E731
    return min(range(1, 512), key=lambda d: abs(count(d) - params))


def fit_1d(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Full-batch Adam with a cosine-decayed learning rate; returns the final mean squared error."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = (net(x) - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return float((net(x) - y).square().mean())


def rings(n: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two concentric rings (radius 1 and 2, noise 0.2): (points (n, 2), labels (n,))."""
    labels = torch.randint(0, 2, (n,), generator=generator, device=device)
    angle = 2 * math.pi * torch.rand(n, generator=generator, device=device)
    radius = 1 + labels + 0.2 * torch.randn(n, generator=generator, device=device)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1), labels


def fit_classifier_2d(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


@register_experiment(
    "approximation",
    claim="A sum of ReLUs is a piecewise-linear function; one wide hidden layer can approximate a function, "
    "but at equal parameters depth approximates better; without a non-linearity the net stays linear.",
    lecture="universal approximation",
)
def approximation_experiment(ctx: Context) -> Outcome:
    device = ctx.device
    # 1. the six-ReLU sum, built as a network and by the formula
    xs = torch.linspace(-0.5, 3, 701, device=device).unsqueeze(1)
    net = six_relu_net().to(device)
    neurons = torch.stack([torch.relu(w * xs[:, 0] + b) for w, b in NEURONS])  # (6, N)
    formula = (torch.tensor(SIGNS, device=device).unsqueeze(1) * neurons).sum(0)
    with torch.no_grad():
        exact_gap = float((net(xs)[:, 0] - formula).abs().max())
    draw_six_relus(ctx, xs[:, 0].cpu(), neurons.cpu(), formula.cpu())

    # 2. width against depth at equal parameters
    x = torch.linspace(-1, 1, 512, device=device).unsqueeze(1)
    y = target(x)
    widths = ctx.pick([1, 16, 128], [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    steps = ctx.pick(600, 2000)
    shallow, deep, deep_widths = {}, {}, {}
    for width in widths:
        params = 3 * width + 1
        deep_widths[width] = deep_width_for(params, 3)
        errors_shallow, errors_deep = [], []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            errors_shallow.append(fit_1d(mlp(width, 1).to(device), x, y, steps))
            torch.manual_seed(seed)
            errors_deep.append(fit_1d(mlp(deep_widths[width], 3).to(device), x, y, steps))
        shallow[width], deep[width] = float(np.mean(errors_shallow)), float(np.mean(errors_deep))
    draw_width_depth(ctx, widths, shallow, deep, deep_widths)

    # 3. linear activations draw a linear boundary
    g = torch.Generator(device=device).manual_seed(0)
    points, labels = rings(1000, g, device)
    torch.manual_seed(0)
    linear_net, relu_net = mlp(32, 3, nn.Identity, 2, 2).to(device), mlp(32, 3, nn.ReLU, 2, 2).to(device)
    steps_2d = ctx.pick(300, 1000)
    acc_linear = fit_classifier_2d(linear_net, points, labels, steps_2d)
    acc_relu = fit_classifier_2d(relu_net, points, labels, steps_2d)
    draw_boundaries(
        ctx, points, labels, {"linear activation": (linear_net, acc_linear), "ReLU": (relu_net, acc_relu)}
    )

    compared = [
        w for w in widths if 3 * w + 1 >= 40
    ]  # below ~40 parameters a 3-hidden-layer net is 2-4 units wide
    deep_wins = sum(deep[w] < shallow[w] for w in compared) / len(compared)
    improvement = shallow[widths[-1]] / shallow[widths[0]]
    checks = [
        check("six-ReLU net vs formula: max |difference|", exact_gap, "< 1e-5 (exact)", exact_gap < 1e-5),
        check(
            f"1 hidden layer: MSE at width {widths[-1]} / at width 1",
            improvement,
            "< 0.05 (wider fits better)",
            improvement < 0.05,
        ),
        check(
            "share of matched sizes (>= 40 params) where 3 hidden layers beat 1",
            deep_wins,
            ">= 0.75 (depth wins)",
            deep_wins >= 0.75,
        ),
        check(
            "rings: accuracy of the linear-activation net",
            acc_linear,
            "<= 0.7 (linear boundary)",
            acc_linear <= 0.7,
        ),
        check("rings: accuracy of the ReLU net", acc_relu, ">= 0.95 (separates)", acc_relu >= 0.95),
    ]
    measured = {
        "six_relu_max_abs_difference": exact_gap,
        "mse_one_hidden_layer": {str(w): shallow[w] for w in widths},
        "mse_three_hidden_layers": {f"{w} (width {deep_widths[w]})": deep[w] for w in widths},
        "rings_accuracy": {"linear activation": acc_linear, "relu": acc_relu},
    }
    notes = (
        "Z(x) uses n_i = max(0, w_i x + b_i) with (w_i, b_i) = "
        + ", ".join(f"({w:g}, {b:g})" for w, b in NEURONS)
        + " (our choice; any weights give a piecewise-linear Z). The 1-D target is "
        "sin(3 pi x) exp(-2 x^2) + |x|/2 on 512 points of [-1, 1], fitted by full-batch Adam "
        f"(lr 1e-2, cosine) for {steps} steps, MSE averaged over {ctx.seeds} seed(s). "
        "Each 1-w-1 net is matched with a 1-d-d-d-1 net of about the same parameter count (3w + 1)."
    )
    config = {"widths": widths, "steps": steps, "rings_steps": steps_2d}
    return Outcome(measured, checks, config, notes)


def draw_six_relus(ctx: Context, x, neurons, z) -> None:
    fig, (ax_n, ax_z) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (sign, n) in enumerate(zip(SIGNS, neurons)):
        ax_n.plot(
            x, sign * n, label=f"{'+' if sign > 0 else '-'}n{i + 1}", linestyle="-" if sign > 0 else "--"
        )
    ax_n.set(title="The six signed ReLU units", xlabel="x")
    ax_n.legend(fontsize=8, ncol=2)
    ax_z.plot(x, z, color="black", linewidth=2)
    for w, b in NEURONS:
        ax_z.axvline(-b / w, color="grey", alpha=0.3)
    ax_z.set(title="Z(x) = -n1 - n2 - n3 + n4 + n5 + n6 (kinks at -b/w)", xlabel="x")
    for ax in (ax_n, ax_z):
        ax.grid(alpha=0.3)
    ctx.figure("six_relus.png", fig, "A sum of six ReLUs is a piecewise-linear function")


def draw_width_depth(ctx: Context, widths, shallow, deep, deep_widths) -> None:
    params = [3 * w + 1 for w in widths]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.loglog(params, [shallow[w] for w in widths], marker="o", label="1 hidden layer (width w)")
    ax.loglog(params, [deep[w] for w in widths], marker="s", label="3 hidden layers (matched parameters)")
    ax.set(
        xlabel="parameters (3w + 1)",
        ylabel="mean squared error",
        title="Fitting a 1-D function: width vs depth",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ctx.figure(
        "width_vs_depth.png", fig, "Error against size: one wide hidden layer versus three narrower ones"
    )


def draw_boundaries(ctx: Context, points, labels, nets: dict) -> None:
    grid = torch.linspace(-3.2, 3.2, 200, device=points.device)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    flat = torch.stack([gx.flatten(), gy.flatten()], 1)
    fig, axes = plt.subplots(1, len(nets), figsize=(5 * len(nets), 4.6))
    for ax, (name, (net, acc)) in zip(axes, nets.items()):
        with torch.no_grad():
            region = net(flat).argmax(1).view(200, 200).cpu()
        ax.contourf(gx.cpu(), gy.cpu(), region, levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fdd0a2"])
        p, l = points.cpu(), labels.cpu()
        ax.scatter(p[l == 0, 0], p[l == 0, 1], s=4, color="#08519c", label="ring 1")
        ax.scatter(p[l == 1, 0], p[l == 1, 1], s=4, color="#a63603", label="ring 2")
        ax.set(title=f"{name}: accuracy {acc:.0%}", aspect="equal")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.suptitle("Decision regions of a 2-32-32-32-2 network")
    ctx.figure("boundaries.png", fig, "Linear activations give a linear boundary; ReLU separates the rings")
