"""Zero-centred inputs. For a unit f = w . x + b with all-positive inputs x, dL/dw = (dL/df) x: every
component of the gradient has the sign of dL/df, so each step moves all weights up or all down, and
reaching w* = (1, -1) takes a zig-zag path (CS231n; LeCun et al. 1998, "Efficient BackProp").
Normalised data also makes the loss less sensitive to small changes of the weights.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    fashion_split,
    register_experiment,
    train_classifier,
)

W_STAR = (1.0, -1.0)
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
MODES = {
    "scale01": "raw pixels in [0, 1]",
    "channel_mean": "zero-centred",
    "channel_mean_std": "standardised",
}
STEPS = [0.05, 0.1, 0.2, 0.5]  # ||dW|| along the most sensitive direction


def toy_inputs(n: int, centred: bool, generator: torch.Generator) -> torch.Tensor:
    """(n, 2) points uniform in [0.5, 1.5]^2 (all positive), or the same points minus their mean."""
    x = 0.5 + torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return x - x.mean(0) if centred else x


def sgd_path(x: torch.Tensor, lr: float, steps: int, generator: torch.Generator) -> tuple[np.ndarray, float]:
    """Plain SGD, batch 1, on 0.5 (w . x - y)^2 with y = w* . x, from w = 0.

    Returns (path, share of the steps with a non-zero gradient whose components have the same sign)."""
    w_star = torch.tensor(W_STAR, dtype=torch.float64)
    y = x @ w_star
    w = torch.zeros(2, dtype=torch.float64)
    path, same_sign, nonzero = [w.clone()], 0, 0
    for i in torch.randint(len(x), (steps,), generator=generator).tolist():
        grad = (w @ x[i] - y[i]) * x[i]
        if grad.abs().min() > 1e-12:  # once at w*, the gradient is 0 and has no sign
            nonzero += 1
            same_sign += int(grad[0] * grad[1] > 0)
        w = w - lr * grad
        path.append(w.clone())
        if not torch.isfinite(w).all() or w.abs().max() > 1e6:
            break
    return torch.stack(path).numpy(), same_sign / max(nonzero, 1)


def steps_to_reach(path: np.ndarray, tolerance: float = 0.05) -> int | None:
    distance = np.linalg.norm(path - np.array(W_STAR), axis=1)
    hits = np.nonzero(distance < tolerance)[0]
    return int(hits[0]) if len(hits) else None


def best_run(x: torch.Tensor, steps: int, seed: int) -> dict:
    """The learning rate from LRS that reaches w* first (fair to both inputs)."""
    runs = []
    for lr in LRS:
        path, share = sgd_path(x, lr, steps, torch.Generator().manual_seed(seed))
        reached = steps_to_reach(path)
        runs.append(
            {
                "lr": lr,
                "path": path,
                "same_sign": share,
                "steps": reached if reached is not None else math.inf,
            }
        )
    return min(runs, key=lambda r: (r["steps"], -r["lr"]))


def top_curvature(model: torch.nn.Linear, x, y, iterations: int = 30) -> tuple[float, torch.Tensor]:
    """Largest eigenvalue of the Hessian of the loss w.r.t. W, and its eigenvector, by power iteration on
    Hessian-vector products: the direction in which a small weight change hurts the loss most."""
    w = model.weight
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, w, create_graph=True)
    v = torch.randn(w.shape, device=w.device, generator=torch.Generator(device=w.device).manual_seed(0))
    v, eigenvalue = v / v.norm(), 0.0
    for _ in range(iterations):
        (hv,) = torch.autograd.grad(grad, w, v, retain_graph=True)
        eigenvalue = float((hv * v).sum())
        v = hv / hv.norm()
    return eigenvalue, v.detach()


@torch.no_grad()
def loss_along(model: torch.nn.Linear, x, y, direction: torch.Tensor, steps: list[float]) -> list[float]:
    """Loss increase when W moves by each step along the unit `direction`."""
    w = model.weight.clone()
    base = float(F.cross_entropy(model(x), y))
    increases = []
    for step in steps:
        model.weight.copy_(w + step * direction)
        increases.append(float(F.cross_entropy(model(x), y)) - base)
    model.weight.copy_(w)
    return increases


@register_experiment(
    "zero_centering",
    claim="With all-positive inputs the gradients on W all have the same sign, so SGD zig-zags and converges "
    "more slowly; after normalising the data the loss is less sensitive to small weight changes.",
    lecture="data preprocessing",
)
def zero_centering_experiment(ctx: Context) -> Outcome:
    steps = ctx.pick(600, 2000)
    positive_steps, centred_steps, runs = [], [], {}
    for seed in range(ctx.seeds):
        for centred in (False, True):
            x = toy_inputs(256, centred, torch.Generator().manual_seed(seed))
            run = best_run(x, steps, seed)
            (centred_steps if centred else positive_steps).append(run["steps"])
            runs.setdefault(centred, run)
    draw_paths(ctx, runs)

    sensitivity, curvature, accuracy = {}, {}, {}
    data = {
        mode: fashion_split(ctx.device, ctx.pick(3000, 20000), ctx.pick(2000, 5000), preprocess=mode)
        for mode in MODES
    }
    for mode, split in data.items():
        torch.manual_seed(0)
        model = torch.nn.Linear(784, 10).to(ctx.device)
        net = torch.nn.Sequential(torch.nn.Flatten(), model)
        history = train_classifier(net, split, epochs=ctx.pick(3, 8), lr=0.01, momentum=0.9)
        accuracy[mode] = history["val_accuracy"][-1]
        x_val = split.x_val.flatten(1)
        curvature[mode], direction = top_curvature(model, x_val, split.y_val)
        sensitivity[mode] = dict(
            zip(map(str, STEPS), loss_along(model, x_val, split.y_val, direction, STEPS))
        )
    draw_sensitivity(ctx, sensitivity)

    median = lambda v: float(np.median(v))  # noqa: E731
    slowdown = median(positive_steps) / median(centred_steps)
    share_pos, share_cen = runs[False]["same_sign"], runs[True]["same_sign"]
    ratio = curvature["scale01"] / curvature["channel_mean"]
    checks = [
        check(
            "positive inputs: share of SGD gradients with same-sign components",
            share_pos,
            "== 1",
            share_pos == 1.0,
        ),
        check("centred inputs: same-sign share", share_cen, "< 0.75", share_cen < 0.75),
        check("steps to reach w* (best lr): positive / centred", slowdown, "> 2 (slower)", slowdown > 2),
        check(
            "Fashion-MNIST linear: top Hessian eigenvalue, raw / zero-centred",
            ratio,
            "> 2",
            ratio > 2,
        ),
    ]
    measured = {
        "toy_steps_to_w_star_positive": positive_steps,
        "toy_steps_to_w_star_centred": centred_steps,
        "toy_best_lr": {"positive": runs[False]["lr"], "centred": runs[True]["lr"]},
        "same_sign_share": {"positive": share_pos, "centred": share_cen},
        "fashion_top_hessian_eigenvalue": curvature,
        "fashion_loss_increase_along_top_eigenvector": sensitivity,
        "fashion_linear_val_accuracy": accuracy,
    }
    notes = (
        "Toy: linear regression y = w* . x with w* = (1, -1) on 256 points, plain SGD with batch 1 "
        f"from w = 0; each input kind gets its best learning rate from {list(LRS)} (first to come "
        f"within 0.05 of w*, at most {steps} steps).\n\nSensitivity: a linear softmax classifier on "
        "Fashion-MNIST pixels in [0, 1] (raw), "
        "zero-centred (channel mean) or standardised (channel mean/std); at the trained W, the largest "
        "eigenvalue of the loss Hessian (power iteration on Hessian-vector products, validation set) and the "
        "loss increase when W moves along its eigenvector. The check compares raw with zero-centred inputs; "
        "dividing by the std also scales the inputs up (about 3x), and the curvature with them."
    )
    return Outcome(measured, checks, {"toy_points": 256, "lrs": list(LRS), "max_steps": steps}, notes)


def draw_paths(ctx: Context, runs: dict) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    grid = np.linspace(-1.6, 1.6, 200)
    gw1, gw2 = np.meshgrid(grid, grid)
    for ax, centred in zip(axes[:2], (False, True)):
        x = toy_inputs(256, centred, torch.Generator().manual_seed(0)).numpy()
        y = x @ np.array(W_STAR)
        loss = ((gw1[..., None] * x[:, 0] + gw2[..., None] * x[:, 1] - y) ** 2).mean(-1) / 2
        ax.contour(gw1, gw2, loss, levels=np.geomspace(1e-3, loss.max(), 15), cmap="Greys", linewidths=0.7)
        run = runs[centred]
        path = run["path"][:400]
        ax.plot(
            path[:, 0],
            path[:, 1],
            color="tab:red" if not centred else "tab:green",
            linewidth=1,
            marker=".",
            ms=3,
        )
        ax.plot(*W_STAR, marker="*", color="gold", ms=15, mec="black")
        kind = "centred inputs" if centred else "all-positive inputs"
        ax.set(
            title=f"{kind}: lr {run['lr']}, {run['steps']} steps", xlabel="w1", ylabel="w2", aspect="equal"
        )
    for centred, color in ((False, "tab:red"), (True, "tab:green")):
        d = np.linalg.norm(runs[centred]["path"] - np.array(W_STAR), axis=1)
        axes[2].semilogy(d, color=color, label="centred" if centred else "all positive")
    axes[2].set(xlabel="SGD step", ylabel="||w - w*||", title="Distance to the optimum")
    axes[2].grid(alpha=0.3, which="both")
    axes[2].legend()
    ctx.figure(
        "zigzag.png", fig, "SGD paths on a 2-D linear toy: all-positive inputs zig-zag, centred inputs do not"
    )


def draw_sensitivity(ctx: Context, sensitivity: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, label in MODES.items():
        ax.plot(STEPS, list(sensitivity[mode].values()), marker="o", label=label)
    ax.set(
        xlabel="||dW|| along the top Hessian eigenvector",
        ylabel="loss increase",
        title="Loss sensitivity to weight perturbations",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    ctx.figure(
        "sensitivity.png",
        fig,
        "A linear classifier on Fashion-MNIST: raw inputs make the loss more sensitive",
    )
