"""Backpropagation, checked three ways with the NumPy engine trainlab.scratch (Rumelhart, Hinton &
Williams 1986; Nielsen 2015, ch. 2):

(a) every layer's analytic backward agrees with centred differences in float64 (relative error
    max|a - n| / max(1e-8, max|a| + max|n|) below 1e-7, cs231n's gradient check);
(b) through 10 sigmoid layers the gradient vanishes toward the input: sigma' <= 1/4, so each layer
    multiplies delta^l = ((W^{l+1})^T delta^{l+1}) (.) sigma'(z^l) by a small factor. The per-layer
    norms ||dL/dW^l|| are measured in the engine and in torch on the same weights and batch, in float64,
    and must agree to a float64 tolerance (ReLU with He init alongside, where they do not vanish);
(c) the perceptron (Rosenblatt 1958) converges on AND but never on XOR, which no line separates
    (Minsky & Papert 1969), while a 2-2-1 sigmoid MLP trained by backprop separates XOR.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.experiments.common import Context, Outcome, check, fashion_split, register_experiment
from trainlab.nn.activation_formulas import FORMULAS
from trainlab.scratch.conv import AvgPool2d, Conv2d, MaxPool2d
from trainlab.scratch.gradcheck import gradient_check
from trainlab.scratch.layers import Activation, Affine, BatchNorm, Dropout, Flatten
from trainlab.scratch.model import MLP
from trainlab.scratch.optim import Momentum
from trainlab.scratch.perceptron import Perceptron
from trainlab.scratch.train import fit

GRADCHECK_TOL = 1e-7
# float64 rounds each op to 2^-53 ~ 1.1e-16 relative; a gradient norm here is a few thousand rounded ops
# (products over 784 inputs, 10 layers), so two correct float64 computations agree to ~1e-12 relative.
FLOAT64_TOL = 1e-10
XOR = (np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64), np.array([0, 1, 1, 0]))
AND = (XOR[0], np.array([0, 0, 0, 1]))


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """|x| in [0.05, 2]: no ReLU-like kink (at 0) within 5e-2 of an input, far beyond eps = 1e-6."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.05, 2.0, shape)


def distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 0.01 apart (a shuffled grid): max pooling has no ties."""
    return 0.01 * rng.permutation(int(np.prod(shape))).reshape(shape) - 0.005 * np.prod(shape)


def maxout_input(rng: np.random.Generator, n: int, k: int, c: int) -> np.ndarray:
    """(n, k * c): piece j of each unit near 0.5 j (+- 0.1), so the pieces never tie."""
    pieces = 0.5 * np.arange(k)[None, :, None] + rng.uniform(-0.1, 0.1, (n, k, c))
    return pieces[:, rng.permutation(k)].reshape(n, k * c)


def layer_cases(rng: np.random.Generator) -> list[tuple[str, object, np.ndarray]]:
    """(name, layer, input) for every layer of the engine and every registered activation."""
    cases = [("Affine 6->4", Affine(6, 4, "xavier", rng, np.float64), rng.standard_normal((5, 6)))]
    for name in FORMULAS.list():
        if name == "maxout":
            cases.append(("Activation maxout (k=2)", Activation("maxout", k=2), maxout_input(rng, 5, 2, 3)))
        else:
            cases.append((f"Activation {name}", Activation(name), away_from_zero(rng, (5, 4))))
    images = rng.standard_normal((3, 2, 6, 6))
    cases += [
        (
            "Dropout 0.3 inverted",
            Dropout(0.3, "inverted", np.random.default_rng(1)),
            rng.standard_normal((5, 4)),
        ),
        (
            "Dropout 0.3 test_scale",
            Dropout(0.3, "test_scale", np.random.default_rng(1)),
            rng.standard_normal((5, 4)),
        ),
        ("BatchNorm (train)", BatchNorm(4, dtype=np.float64), rng.standard_normal((6, 4))),
        ("BatchNorm 2d (train)", BatchNorm(2, dtype=np.float64), images),
        ("Flatten", Flatten(), images),
        ("Conv2d 2->3 3x3 pad 1", Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), images),
        ("Conv2d 2->3 3x3 stride 2", Conv2d(2, 3, 3, stride=2, rng=rng, dtype=np.float64), images),
        ("MaxPool2d 2", MaxPool2d(2), distinct(rng, (3, 2, 6, 6))),
        ("AvgPool2d 2", AvgPool2d(2), images),
    ]
    return cases


def loss_cases(rng: np.random.Generator) -> list[tuple[str, object, np.ndarray, np.ndarray]]:
    """A small tanh MLP with each loss: the loss's dL/dscores is checked through the whole model."""
    x = rng.standard_normal((6, 5))
    classes = rng.integers(0, 3, 6)
    return [
        (
            "MLP 5-4-3 + softmax cross-entropy",
            MLP([5, 4, 3], "tanh", "xavier", 0, dtype=np.float64),
            x,
            classes,
        ),
        (
            "MLP 5-4-3 + multiclass SVM",
            MLP([5, 4, 3], "tanh", "xavier", 0, "multiclass_svm", dtype=np.float64),
            x,
            classes,
        ),
        (
            "MLP 5-4-1 + sigmoid cross-entropy",
            MLP([5, 4, 1], "tanh", "xavier", 0, "sigmoid_cross_entropy", dtype=np.float64),
            x,
            classes % 2,
        ),
        (
            "MLP 5-4-3 + MSE",
            MLP([5, 4, 3], "tanh", "xavier", 0, "mse", dtype=np.float64),
            x,
            rng.standard_normal((6, 3)),
        ),
    ]


def gradient_table(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for name, layer, x in layer_cases(rng):
        errors = gradient_check(layer, x, seed=seed)
        rows.append({"layer": name, "errors": errors, "max": max(errors.values())})
    for name, model, x, y in loss_cases(rng):
        errors = gradient_check(model, x, y, seed=seed)
        rows.append({"layer": name, "errors": errors, "max": max(errors.values())})
    return rows


def torch_twin(model, act: str) -> nn.Sequential:
    """The engine's MLP as torch layers in float64, with its weights (W is (fan_in, fan_out): transposed)."""
    layers: list[nn.Module] = [nn.Flatten()]
    affines = [i for i, layer in enumerate(model.layers) if isinstance(layer, Affine)]
    for j, i in enumerate(affines):
        W, b = model.params[f"{i}.W"], model.params[f"{i}.b"]
        linear = nn.Linear(*W.shape, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
        if j < len(affines) - 1:
            layers.append(nn.Sigmoid() if act == "sigmoid" else nn.ReLU())
    return nn.Sequential(*layers)


def gradient_norms(x: np.ndarray, y: np.ndarray, act: str, init: str, width: int, depth: int, seed: int):
    """||dL/dW^l|| for l = 1 .. depth + 1, in the engine and in torch, same weights and batch, float64."""
    model = MLP([x[0].size, *[width] * depth, 10], act=act, init=init, seed=seed, dtype=np.float64)
    _, grads = model.gradients(x, y)
    engine = [float(np.linalg.norm(g)) for name, g in grads.items() if name.endswith(".W")]
    twin = torch_twin(model, act)
    F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    reference = [float(m.weight.grad.norm()) for m in twin if isinstance(m, nn.Linear)]
    return engine, reference


def xor_runs(seeds: int, epochs: int) -> dict:
    """The perceptron on AND and XOR; a 2-2-1 sigmoid MLP on XOR for each seed (full batch, momentum)."""
    and_errors = Perceptron(2).fit(*AND, epochs=epochs)
    perceptron = Perceptron(2)
    xor_errors = perceptron.fit(*XOR, epochs=epochs)
    solved, models = [], []
    for seed in range(seeds):
        mlp = MLP([2, 2, 1], act="sigmoid", init="xavier", seed=seed, loss="sigmoid_cross_entropy",
                  dtype=np.float64)  # fmt: skip
        fit(mlp, Momentum(mlp.params, lr=0.5), *XOR, epochs=epochs, batch_size=4, seed=seed)
        solved.append(bool((mlp.predict(XOR[0]) == XOR[1]).all()))
        models.append(mlp)
    return {"and_errors": and_errors, "xor_errors": xor_errors, "perceptron": perceptron, "solved": solved,
            "mlp": models[solved.index(True)] if any(solved) else models[0]}  # fmt: skip


@register_experiment(
    "backprop",
    claim="Backpropagation computes exact gradients (every layer agrees with numerical differentiation "
    "and with PyTorch); through 10 sigmoid layers those gradients vanish toward the input; a perceptron "
    "cannot learn XOR but a 2-2-1 MLP trained by backprop can.",
    lecture="the neuron, backpropagation",
)
def backprop_experiment(ctx: Context) -> Outcome:
    rows = gradient_table(seed=0)
    worst = max(r["max"] for r in rows)
    ctx.log(f"gradient check: {len(rows)} layers, worst relative error {worst:.2e}")

    n, width, depth = ctx.pick(128, 1024), ctx.pick(64, 128), 10
    data = fashion_split(torch.device("cpu"), n, 1)
    x, y = data.x_train.numpy().astype(np.float64), data.y_train.numpy()
    norms = {}
    for act, init in (("sigmoid", "xavier"), ("relu", "he")):
        engine, reference = gradient_norms(x, y, act, init, width, depth, seed=0)
        norms[act] = {"engine": engine, "torch": reference}
    disagreement = max(abs(a - b) / b for d in norms.values() for a, b in zip(d["engine"], d["torch"]))
    sigmoid = norms["sigmoid"]["engine"]
    vanishing = sigmoid[0] / sigmoid[-1]
    ctx.log(f"sigmoid: first / last layer gradient norm {vanishing:.2e}; engine vs torch {disagreement:.1e}")

    xor = xor_runs(seeds=ctx.pick(5, 10), epochs=ctx.pick(1000, 3000))
    solved_share = float(np.mean(xor["solved"]))
    draw(ctx, rows, norms, xor)

    checks = [
        check(
            f"worst relative error of any layer's gradient, in units of {GRADCHECK_TOL:g}",
            worst / GRADCHECK_TOL,
            "< 1",
            worst < GRADCHECK_TOL,
        ),
        check(
            f"engine vs torch: largest relative difference of a gradient norm, in units of {FLOAT64_TOL:g}",
            disagreement / FLOAT64_TOL,
            "< 1",
            disagreement < FLOAT64_TOL,
        ),
        check(
            "10 sigmoid layers: ||dL/dW^1|| / ||dL/dW^11||", vanishing, "< 0.01 (vanishes)", vanishing < 0.01
        ),
        check(
            "perceptron on AND: mistakes in the last epoch",
            xor["and_errors"][-1],
            "= 0 (converged)",
            xor["and_errors"][-1] == 0,
        ),
        check(
            "perceptron on XOR: mistakes in the last epoch",
            xor["xor_errors"][-1],
            ">= 1 (never converges)",
            xor["xor_errors"][-1] >= 1,
        ),
        check(
            "2-2-1 MLP on XOR: share of seeds with all 4 points right",
            solved_share,
            ">= 0.5",
            solved_share >= 0.5,
        ),
    ]
    measured = {
        "gradient_check": {r["layer"]: r["errors"] for r in rows},
        "gradient_norm_per_layer": norms,
        "sigmoid_first_over_last": vanishing,
        "relu_first_over_last": norms["relu"]["engine"][0] / norms["relu"]["engine"][-1],
        "engine_vs_torch_max_relative_difference": disagreement,
        "perceptron_mistakes_per_epoch": {"AND": xor["and_errors"][:20], "XOR": xor["xor_errors"][:20]},
        "mlp_xor_solved_by_seed": xor["solved"],
    }
    notes = (
        f"(a) `trainlab.scratch.gradient_check` in float64, eps = 1e-6, on small random shapes; inputs of "
        "ReLU-like units are drawn with |x| >= 0.05 and max-pool inputs without ties, away from the kinks "
        "where no difference quotient matches a one-sided slope. (b) MLP 784-"
        f"{'-'.join([str(width)] * depth)}-10, sigmoid with Xavier init and ReLU with He init, one batch of "
        f"{n} Fashion-MNIST images (channel_mean_std), softmax cross-entropy; torch gets the same float64 "
        "weights. (c) Perceptron with the perceptron rule (lr 1, weights from 0); 2-2-1 MLP with sigmoid "
        "units, Xavier init, sigmoid cross-entropy, full-batch momentum SGD (lr 0.5, 0.9)."
    )
    config = {"width": width, "depth": depth, "images": n, "xor_epochs": ctx.pick(1000, 3000)}
    return Outcome(measured, checks, config, notes)


def draw(ctx: Context, rows: list[dict], norms: dict, xor: dict) -> None:
    fig, (ax_check, ax_norm, ax_xor) = plt.subplots(1, 3, figsize=(18, 5.5))
    names = [r["layer"] for r in rows]
    ax_check.barh(range(len(rows)), [max(r["max"], 1e-20) for r in rows], color="tab:blue")
    ax_check.axvline(GRADCHECK_TOL, color="tab:red", ls="--", label=f"{GRADCHECK_TOL:g}")
    ax_check.set_yticks(range(len(rows)), names, fontsize=7, parse_math=False)
    ax_check.invert_yaxis()
    ax_check.set(xscale="log", xlabel="relative error (worst parameter)", title="(a) gradient check, float64")
    ax_check.legend()
    for act, d in norms.items():
        layers = range(1, len(d["engine"]) + 1)
        ax_norm.plot(layers, d["engine"], marker="o", label=f"{act}: engine")
        ax_norm.plot(layers, d["torch"], ls="none", marker="x", color="k", label=f"{act}: torch")
    ax_norm.set(yscale="log", xlabel="layer (1 = input side)", ylabel="||dL/dW||",
                title="(b) gradient norm per layer, 10 hidden layers")  # fmt: skip
    ax_norm.legend(fontsize=8)
    grid = np.linspace(-0.5, 1.5, 201)
    gx, gy = np.meshgrid(grid, grid)
    scores = xor["mlp"].forward(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
    ax_xor.contourf(gx, gy, scores > 0, levels=[-0.5, 0.5, 1.5], colors=["#f4cccc", "#cfe2f3"])
    p = xor["perceptron"]
    if abs(p.w[1]) > 1e-12:  # w . x - T = 0, where the perceptron stopped
        ax_xor.plot(grid, (p.T - p.w[0] * grid) / p.w[1], color="k", ls="--", label="perceptron's line")
    elif abs(p.w[0]) > 1e-12:
        ax_xor.axvline(p.T / p.w[0], color="k", ls="--", label="perceptron's line")
    X, y = XOR
    ax_xor.scatter(X[:, 0], X[:, 1], c=["tab:red" if t == 0 else "tab:blue" for t in y], s=120, zorder=3)
    ax_xor.set(xlim=(-0.5, 1.5), ylim=(-0.5, 1.5), title="(c) XOR: 2-2-1 MLP regions, perceptron line")
    if ax_xor.get_legend_handles_labels()[0]:
        ax_xor.legend(loc="upper center")
    ctx.figure("backprop.png", fig, "Gradient check per layer; gradient norms per layer; XOR")
