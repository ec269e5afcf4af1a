"""Weight initialisation: the lectures' 6-layer, 4096-wide network on 16 random inputs.

    W = scale * randn(Din, Dout);  x = act(x @ W)   for 6 layers (no biases)

small random (0.01) collapses tanh activations toward 0 and dL/dW with them; 0.05 saturates them at
+-1; Xavier (std 1/sqrt(Din), Glorot & Bengio 2010) keeps tanh nicely scaled but halves the ReLU
variance each layer; He (std sqrt(2/Din), He et al. 2015) keeps ReLU stable. Constant init makes every
hidden unit compute, and learn, the same thing: the symmetry is never broken.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
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

CASES = {  # name: (activation, std of W as a function of fan-in)
    "tanh, 0.01 randn": ("tanh", lambda fan_in: 0.01),
    "tanh, 0.05 randn": ("tanh", lambda fan_in: 0.05),
    "tanh, Xavier": ("tanh", lambda fan_in: 1 / math.sqrt(fan_in)),
    "ReLU, Xavier": ("relu", lambda fan_in: 1 / math.sqrt(fan_in)),
    "ReLU, He": ("relu", lambda fan_in: math.sqrt(2 / fan_in)),
}


def random_network(
    width: int, depth: int, batch: int, seed: int, device
) -> tuple[torch.Tensor, list, torch.Tensor]:
    """(inputs (batch, width), standard-normal weights per layer, upstream gradient); every case scales
    the same draws, so the cases differ only in their scale."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, width, device=device, generator=g)
    weights = [torch.randn(width, width, device=device, generator=g) for _ in range(depth)]
    return x, weights, torch.randn(batch, width, device=device, generator=g)


def forward_stats(act: str, std: float, network: tuple) -> dict:
    """Per-layer activation std, saturation, local gradient, value sample and dL/dW std."""
    x, normals, upstream = network
    fn = torch.tanh if act == "tanh" else torch.relu
    weights, outputs = [], []
    for z in normals:
        w = (std * z).requires_grad_()
        x = fn(x @ w)
        weights.append(w)
        outputs.append(x)
    (x * upstream).sum().backward()  # a random linear loss on the last layer
    outputs = [a.detach() for a in outputs]
    return {
        "std": [float(a.std()) for a in outputs],
        "saturated": [float((a.abs() > 0.99).float().mean()) for a in outputs],
        "local_grad": [
            float((1 - a.square()).mean()) if act == "tanh" else float((a > 0).float().mean())
            for a in outputs
        ],
        "grad_std": [float(w.grad.std()) for w in weights],
        "values": [a.flatten()[:8192].cpu().numpy() for a in outputs],
    }


def symmetry(ctx: Context, constant: bool, steps_epochs: int) -> dict:
    """Train 784-32-10 from constant (0.01) or random init; count distinct hidden units afterwards."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10)).to(ctx.device)
    if constant:
        for p in model.parameters():
            nn.init.constant_(p, 0.01)
    data = fashion_split(ctx.device, ctx.pick(2000, 10000), ctx.pick(1000, 2000))
    history = train_classifier(model, data, epochs=steps_epochs, lr=0.05, batch_size=100)
    w1 = model[1].weight.detach()  # (32, 784): one row per hidden unit
    spread = float((w1 - w1.mean(0)).abs().max())
    distinct = len(torch.unique(w1.mul(1e4).round(), dim=0))
    return {
        "max_unit_difference": spread,
        "distinct_units": distinct,
        "val_accuracy": history["val_accuracy"][-1],
        "w1": w1.cpu(),
    }


@register_experiment(
    "init",
    claim="Small random init collapses deep tanh activations (and dL/dW) to 0, larger init saturates them, "
    "Xavier suits tanh but collapses ReLU, He keeps ReLU stable; constant init never breaks symmetry.",
    lecture="weight initialisation",
)
def init_experiment(ctx: Context) -> Outcome:
    width, depth, batch = 4096, 6, 16
    runs = {name: [] for name in CASES}
    for seed in range(ctx.seeds):
        network = random_network(width, depth, batch, seed, ctx.device)
        for name, (act, std_of) in CASES.items():
            runs[name].append(forward_stats(act, std_of(width), network))
    mean_of = lambda name, key: np.mean([r[key] for r in runs[name]], axis=0)  # noqa: E731
    ratio = {name: float(mean_of(name, "std")[-1] / mean_of(name, "std")[0]) for name in CASES}
    sym_const = symmetry(ctx, constant=True, steps_epochs=ctx.pick(1, 3))
    sym_random = symmetry(ctx, constant=False, steps_epochs=ctx.pick(1, 3))

    draw_histograms(ctx, runs)
    draw_profiles(ctx, runs, mean_of)
    draw_symmetry(ctx, sym_const, sym_random)

    grad_small = float(np.mean(mean_of("tanh, 0.01 randn", "grad_std")))
    grad_xavier = float(np.mean(mean_of("tanh, Xavier", "grad_std")))
    local_ratio = float(
        mean_of("tanh, 0.05 randn", "local_grad")[-1] / mean_of("tanh, Xavier", "local_grad")[-1]
    )
    xavier_tanh = mean_of("tanh, Xavier", "std")
    checks = [
        check(
            "tanh 0.01: layer-6 std / layer-1 std",
            ratio["tanh, 0.01 randn"],
            "< 0.1 (collapse)",
            ratio["tanh, 0.01 randn"] < 0.1,
        ),
        check(
            "tanh 0.01: mean dL/dW std / Xavier's",
            grad_small / grad_xavier,
            "< 0.1 (gradients vanish)",
            grad_small / grad_xavier < 0.1,
        ),
        check(
            "tanh 0.05: layer-6 mean tanh'(z) / Xavier's",
            local_ratio,
            "< 0.5 (saturated, gradients cut)",
            local_ratio < 0.5,
        ),
        check(
            "tanh Xavier: layer-6 std",
            xavier_tanh[-1],
            "in [0.1, 0.9] (nicely scaled)",
            0.1 <= xavier_tanh[-1] <= 0.9,
        ),
        check(
            "ReLU Xavier: layer-6 std / layer-1 std",
            ratio["ReLU, Xavier"],
            "< 0.25 (collapse)",
            ratio["ReLU, Xavier"] < 0.25,
        ),
        check(
            "ReLU He: layer-6 std / layer-1 std",
            ratio["ReLU, He"],
            "within 20% of 1 (stable)",
            abs(ratio["ReLU, He"] - 1) <= 0.2,
        ),
        check(
            "constant init: distinct hidden units after training",
            sym_const["distinct_units"],
            "== 1 (symmetry never broken)",
            sym_const["distinct_units"] == 1,
        ),
    ]
    measured = {
        "per_layer_std": {name: [round(v, 6) for v in mean_of(name, "std")] for name in CASES},
        "per_layer_dLdW_std": {
            name: [float(f"{v:.4g}") for v in mean_of(name, "grad_std")] for name in CASES
        },
        "layer6_saturated_share": {name: round(float(mean_of(name, "saturated")[-1]), 4) for name in CASES},
        "layer6_mean_local_gradient": {
            name: round(float(mean_of(name, "local_grad")[-1]), 4) for name in CASES
        },
        "layer6_over_layer1_std": {
            name: {
                "mean": round(mean_std([r["std"][-1] / r["std"][0] for r in runs[name]])[0], 4),
                "std": round(mean_std([r["std"][-1] / r["std"][0] for r in runs[name]])[1], 4),
            }
            for name in CASES
        },
        "symmetry": {
            kind: {k: v for k, v in result.items() if k != "w1"}
            for kind, result in (("constant 0.01", sym_const), ("random (PyTorch default)", sym_random))
        },
    }
    notes = (
        f"A {depth}-layer, {width}-wide network without biases, on {batch} standard-normal inputs; "
        f"statistics averaged over {ctx.seeds} seed(s). dL/dW comes from a random linear loss on the last "
        "layer. Saturation is measured as the mean local gradient tanh'(z) = 1 - a^2 at layer 6 (the share "
        "with |a| > 0.99 is listed too). The symmetry run trains 784-32-10 (tanh) on "
        "Fashion-MNIST with every weight and bias at 0.01."
    )
    config = {"width": width, "depth": depth, "batch": batch, "cases": list(CASES)}
    return Outcome(measured, checks, config, notes)


def draw_histograms(ctx: Context, runs: dict) -> None:
    fig, axes = plt.subplots(len(CASES), 6, figsize=(16, 2.1 * len(CASES)), sharey="row")
    for row, name in enumerate(CASES):
        values, stds = runs[name][0]["values"], runs[name][0]["std"]
        limit = max(float(np.abs(values[0]).max()), 1e-3)
        for col in range(6):
            counts, edges = np.histogram(values[col], bins=50, range=(-limit, limit))
            axes[row, col].stairs(counts, edges, fill=True, color=plt.cm.tab10(row))
            axes[row, col].set_title(f"layer {col + 1}: std {stds[col]:.2g}", fontsize=9)
            axes[row, col].tick_params(labelsize=7)
        axes[row, 0].set_ylabel(name, fontsize=10)
    fig.suptitle("Activation histograms per layer (6 x 4096, 16 random inputs; x range: layer 1's)")
    fig.subplots_adjust(hspace=0.6, wspace=0.15, top=0.92)
    ctx.figure(
        "histograms.png", fig, "Per-layer activation histograms, one row per initialisation, as in the slides"
    )


def draw_profiles(ctx: Context, runs: dict, mean_of) -> None:
    fig, (ax_std, ax_grad) = plt.subplots(1, 2, figsize=(11, 4))
    layers = np.arange(1, 7)
    for i, name in enumerate(CASES):
        ax_std.semilogy(
            layers, np.maximum(mean_of(name, "std"), 1e-30), marker="o", label=name, color=plt.cm.tab10(i)
        )
        ax_grad.semilogy(
            layers,
            np.maximum(mean_of(name, "grad_std"), 1e-30),
            marker="o",
            label=name,
            color=plt.cm.tab10(i),
        )
    ax_std.set(xlabel="layer", ylabel="std of activations", title="Activation scale through depth")
    ax_grad.set(xlabel="layer", ylabel="std of dL/dW", title="Gradient magnitude per layer")
    for ax in (ax_std, ax_grad):
        ax.grid(alpha=0.3, which="both")
    ax_std.legend(fontsize=8)
    ctx.figure(
        "profiles.png", fig, "Activation std and dL/dW magnitude against depth for each initialisation"
    )


def draw_symmetry(ctx: Context, const: dict, random: dict) -> None:
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
    for row, (name, result) in enumerate((("constant 0.01", const), ("random", random))):
        for col in range(8):
            ax = axes[row, col]
            ax.imshow(result["w1"][col].view(28, 28), cmap="coolwarm")
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(f"{name}\n{result['distinct_units']} distinct", fontsize=9)
    fig.suptitle("First-layer weights of 8 hidden units after training (784-32-10, Fashion-MNIST)")
    ctx.figure(
        "symmetry.png",
        fig,
        "Constant init: every hidden unit learns the same weights; random init breaks the symmetry",
    )
