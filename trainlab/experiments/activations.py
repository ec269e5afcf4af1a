"""Activation functions compared on real data.

1. The same MLP trained on Fashion-MNIST with every registered activation, over several seeds:
   convergence curves and final accuracy +- std.
2. Krizhevsky et al. (2012), Figure 1: a four-layer CNN with ReLUs reaches 25% training error about six
   times faster than the same network with tanh (each with its own best learning rate).
3. sigma'(x) = sigma(x)(1 - sigma(x)) <= 1/4, so through a 10-layer sigmoid MLP the gradient shrinks
   layer by layer toward the input (vanishing gradient).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.experiments.common import (
    Context,
    Outcome,
    check,
    fashion_split,
    mean_std,
    register_experiment,
    train_classifier,
)
from trainlab.nn.activations import ACTIVATIONS, create_activation


def activation_mlp(
    act: str, widths: list[int], in_features: int = 784, num_classes: int = 10
) -> nn.Sequential:
    """Flatten -> (Linear -> act) per width -> Linear; maxout replaces its Linear (k = 2 pieces)."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = in_features
    for width in widths:
        if ACTIVATIONS.meta(act).get("wraps_layer"):
            layers.append(create_activation(act, layer=nn.Linear(fan_in, width)))
        else:
            layers += [nn.Linear(fan_in, width), create_activation(act)]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, num_classes))


def four_layer_cnn(act: str, widths: tuple[int, int], hidden: int = 64) -> nn.Sequential:
    """conv5x5 -> act -> pool -> conv5x5 -> act -> pool -> fc -> act -> fc; no normalisation (28x28 input)."""
    c1, c2 = widths
    return nn.Sequential(
        nn.Conv2d(1, c1, 5),
        create_activation(act),
        nn.MaxPool2d(2),  # (B, c1, 12, 12)
        nn.Conv2d(c1, c2, 5),
        create_activation(act),
        nn.MaxPool2d(2),  # (B, c2, 4, 4)
        nn.Flatten(),
        nn.Linear(c2 * 16, hidden),
        create_activation(act),
        nn.Linear(hidden, 10),
    )


def steps_to_error(
    act: str, lr: float, data, target_error: float, max_steps: int, batch_size: int, seed: int, widths: tuple
) -> tuple[float, np.ndarray]:
    """SGD steps until the training error (mean over the last 20 batches) first drops to `target_error`."""
    torch.manual_seed(seed)
    model = four_layer_cnn(act, widths).to(data.x_train.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    g = torch.Generator(device=data.x_train.device).manual_seed(seed)
    errors = torch.zeros(max_steps, device=data.x_train.device)
    check_every, n = 50, len(data.x_train)
    for step in range(max_steps):
        idx = torch.randint(n, (batch_size,), device=data.x_train.device, generator=g)
        logits = model(data.x_train[idx])
        loss = F.cross_entropy(logits, data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        errors[step] = (logits.detach().argmax(1) != data.y_train[idx]).float().mean()
        if (step + 1) % check_every == 0:  # one host read every 50 steps, to stop early
            smoothed = moving_average(errors[: step + 1].cpu().numpy())
            if not math.isfinite(float(loss.detach())):
                return math.inf, smoothed
            hit = np.nonzero(smoothed <= target_error)[0]
            if len(hit):
                return float(hit[0] + 1), smoothed
    return math.inf, moving_average(errors.cpu().numpy())


def moving_average(values: np.ndarray, window: int = 20) -> np.ndarray:
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def gradient_flow(
    act: str, x: torch.Tensor, y: torch.Tensor, depth: int = 10, width: int = 128
) -> list[float]:
    """||dL/dW|| of each of the `depth` hidden layers of a freshly initialised MLP (PyTorch default init)."""
    torch.manual_seed(0)
    model = activation_mlp(act, [width] * depth).to(x.device)
    F.cross_entropy(model(x), y).backward()
    return [float(m.weight.grad.norm()) for m in model if isinstance(m, nn.Linear)][:depth]


@register_experiment(
    "activations",
    claim="ReLU-family activations train faster than saturating ones: ReLU reaches 25% training error about "
    "6x faster than tanh (Krizhevsky et al. 2012), and sigmoid (max derivative 1/4) makes gradients vanish "
    "through depth.",
    lecture="activation functions",
)
def activations_experiment(ctx: Context) -> Outcome:
    data = fashion_split(ctx.device, ctx.pick(3000, 20000), ctx.pick(1000, 5000))
    epochs, widths = ctx.pick(2, 10), [128, 128, 128]
    curves, final = {}, {}
    for act in ACTIVATIONS.list():
        runs = []
        for seed in range(ctx.seeds):
            torch.manual_seed(seed)
            model = activation_mlp(act, widths).to(ctx.device)
            runs.append(train_classifier(model, data, epochs=epochs, lr=0.05, batch_size=128, seed=seed))
        curves[act] = np.mean([r["val_accuracy"] for r in runs], axis=0)
        final[act] = mean_std([r["val_accuracy"][-1] for r in runs])
        ctx.log(f"{act}: {final[act][0]:.4f}")
    draw_convergence(ctx, curves, final, epochs)

    # Krizhevsky's measurement: steps to 25% training error, best learning rate for each activation
    lrs = ctx.pick([0.05], [0.01, 0.03, 0.1])
    max_steps, cnn_widths, cnn_batch = ctx.pick(300, 1500), ctx.pick((8, 16), (16, 32)), ctx.pick(32, 64)
    krizhevsky, traces = {}, {}
    for act in ("relu", "tanh"):
        per_seed = []
        for seed in range(ctx.seeds):
            results = {
                lr: steps_to_error(act, lr, data, 0.25, max_steps, cnn_batch, seed, cnn_widths) for lr in lrs
            }
            best_lr = min(results, key=lambda lr: results[lr][0])
            per_seed.append({"lr": best_lr, "steps": results[best_lr][0]})
            traces.setdefault(act, results[best_lr][1])
        krizhevsky[act] = per_seed
    steps_relu = np.median([r["steps"] for r in krizhevsky["relu"]])
    steps_tanh = np.median([r["steps"] for r in krizhevsky["tanh"]])
    speedup = float(steps_tanh / steps_relu)
    draw_krizhevsky(ctx, traces, krizhevsky)

    # vanishing gradient through a 10-layer sigmoid MLP
    x, y = data.x_train[:256], data.y_train[:256]
    flow = {act: gradient_flow(act, x, y) for act in ("sigmoid", "tanh", "relu")}
    grid = torch.linspace(-10, 10, 20001)
    max_sigmoid_grad = float(create_activation("sigmoid").derivative(grid).max())
    draw_gradient_flow(ctx, flow)
    sigmoid_decay = math.log10(flow["sigmoid"][0] / flow["sigmoid"][-1])

    relu_acc, sigmoid_acc, tanh_acc = final["relu"][0], final["sigmoid"][0], final["tanh"][0]
    checks = [
        check(
            "MLP: final val accuracy, relu - sigmoid",
            relu_acc - sigmoid_acc,
            "> 0.02",
            relu_acc - sigmoid_acc > 0.02,
        ),
        check("MLP: final val accuracy, relu - tanh", relu_acc - tanh_acc, ">= 0", relu_acc >= tanh_acc),
        check(
            "CNN: steps to 25% training error, tanh / relu",
            speedup,
            ">= 3 (about 6x; within a factor 2)",
            speedup >= 3,
        ),
        check("max of sigma'(x)", max_sigmoid_grad, "== 0.25 (to 1e-6)", abs(max_sigmoid_grad - 0.25) < 1e-6),
        check(
            "10-layer sigmoid MLP: log10(||dL/dW|| layer 1 / layer 10)",
            sigmoid_decay,
            "< -2 (vanishes)",
            sigmoid_decay < -2,
        ),
    ]
    measured = {
        "final_val_accuracy": {a: {"mean": round(m, 4), "std": round(s, 4)} for a, (m, s) in final.items()},
        "krizhevsky_steps_to_25pct_training_error": krizhevsky,
        "krizhevsky_speedup_tanh_over_relu": speedup,
        "gradient_norm_per_layer_10_layer_mlp": flow,
        "max_sigmoid_derivative": max_sigmoid_grad,
    }
    notes = (
        f"MLP 784-{'-'.join(map(str, widths))}-10 (maxout: k = 2 pieces per unit), PyTorch default "
        f"init, SGD momentum 0.9, lr 0.05, batch 128, {epochs} epochs on "
        f"{len(data.x_train)} training images, "
        f"validation "
        f"on {len(data.x_val)} held-out images, {ctx.seeds} seed(s). Krizhevsky's check: a 4-layer CNN "
        f"(conv5x5 {cnn_widths[0]}, pool, conv5x5 {cnn_widths[1]}, pool, fc 64, fc 10; no normalisation), "
        f"SGD "
        f"momentum 0.9, batch {cnn_batch}, learning rate "
        f"chosen per activation from {lrs} (fastest wins), training error as a 20-batch moving average; "
        "Krizhevsky measured it on CIFAR-10, where 25% error is much harder to reach than on Fashion-MNIST."
    )
    config = {
        "widths": widths,
        "epochs": epochs,
        "lr": 0.05,
        "krizhevsky_lrs": lrs,
        "max_steps": max_steps,
        "cnn_widths": list(cnn_widths),
        "cnn_batch": cnn_batch,
    }
    return Outcome(measured, checks, config, notes)


def draw_convergence(ctx: Context, curves: dict, final: dict, epochs: int) -> None:
    fig, (ax, ax_bar) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.cm.tab20(np.linspace(0, 1, len(curves)))
    for color, (act, curve) in zip(colors, curves.items()):
        ax.plot(range(1, epochs + 1), curve, marker="o", ms=3, color=color, label=act)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="Convergence of the same MLP per activation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    order = sorted(final, key=lambda a: final[a][0])
    ax_bar.barh(order, [final[a][0] for a in order], xerr=[final[a][1] for a in order], color="tab:blue")
    low = min(final[a][0] for a in order)
    ax_bar.set(xlim=(max(0.0, low - 0.05), 1.0), xlabel="final validation accuracy (mean +- std over seeds)")
    ax_bar.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    ctx.figure(
        "convergence.png", fig, "Validation accuracy per epoch and final accuracy for every activation"
    )


def draw_krizhevsky(ctx: Context, traces: dict, results: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for act, color in (("relu", "tab:blue"), ("tanh", "tab:red")):
        r = results[act][0]
        ax.plot(np.arange(1, len(traces[act]) + 1), traces[act], color=color, label=f"{act} (lr {r['lr']})")
        if math.isfinite(r["steps"]):
            ax.axvline(r["steps"], color=color, linestyle=":")
    ax.axhline(0.25, color="black", linestyle="--", label="25% training error")
    ax.set(
        xlabel="SGD step",
        ylabel="training error (20-batch mean)",
        title="4-layer CNN: ReLU vs tanh",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3)
    ax.legend()
    ctx.figure(
        "krizhevsky.png",
        fig,
        "Steps to 25% training error for ReLU and tanh (Krizhevsky et al. 2012, Fig. 1)",
    )


def draw_gradient_flow(ctx: Context, flow: dict) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for act, norms in flow.items():
        ax.semilogy(range(1, len(norms) + 1), norms, marker="o", label=act)
    ax.set(
        xlabel="hidden layer (input -> output)",
        ylabel="||dL/dW|| at init",
        title="Gradient flow, 10-layer MLP",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ctx.figure("gradient_flow.png", fig, "Sigmoid's gradient vanishes toward the input; ReLU's does not")
