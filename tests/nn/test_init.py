"""Initialisers: empirical std against each formula, seeds, LSUV and data-dependent on real data, Fixup."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.tolerance import EPS, assert_float32_close
from trainlab.errors import ConfigError
from trainlab.nn.init import INITIALIZERS, fans, init_model, weight_layers
from trainlab.nn.layers import ResidualBlock

LINEAR = (2048, 1024)  # 2M weights: the sample std has a standard error of ~0.05% of the true one
CONV = (128, 128, 3, 3)  # fan_in = 3 * 3 * 128 = 1152; 147k weights, standard error of the std ~0.2%

# scheme, options, expected std given (fan_in, fan_out)
FORMULAS = [
    ("normal", {"std": 0.5}, lambda fi, fo: 0.5),
    ("small_random", {}, lambda fi, fo: 0.01),
    ("uniform", {"limit": 0.3}, lambda fi, fo: 0.3 / math.sqrt(3)),
    ("xavier_normal", {}, lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("xavier_uniform", {}, lambda fi, fo: math.sqrt(2 / (fi + fo))),
    ("xavier_normal", {"act": "tanh"}, lambda fi, fo: 5 / 3 * math.sqrt(2 / (fi + fo))),
    ("kaiming_normal", {}, lambda fi, fo: math.sqrt(2 / fi)),
    ("kaiming_uniform", {}, lambda fi, fo: math.sqrt(2 / fi)),
    ("kaiming_normal", {"mode": "fan_out"}, lambda fi, fo: math.sqrt(2 / fo)),
    ("kaiming_normal", {"act": "leaky_relu", "slope": 0.1}, lambda fi, fo: math.sqrt(2 / (1.01 * fi))),
    ("orthogonal", {}, lambda fi, fo: 1 / math.sqrt(max(fi, fo))),
]


@pytest.mark.parametrize("scheme,options,std", FORMULAS, ids=[f"{s}-{o}" for s, o, _ in FORMULAS])
@pytest.mark.parametrize("shape", [LINEAR, CONV], ids=["linear", "conv3x3"])
def test_empirical_std_within_5_standard_errors_of_formula(scheme, options, std, shape):
    layer = nn.Linear(shape[1], shape[0]) if len(shape) == 2 else nn.Conv2d(shape[1], shape[0], shape[2])
    init_model(layer, scheme, seed=0, **options)
    fan_in, fan_out = fans(layer.weight)
    expected, n = std(fan_in, fan_out), layer.weight.numel()
    # sampling theory for n i.i.d. weights: the sample std has relative standard error
    # sqrt((kurtosis - 1) / (4 n)), at most 1 / sqrt(2 n) (normal: kurtosis 3; uniform: 1.8), and the
    # sample mean std / sqrt(n); 5 standard errors fail a correct formula with probability < 1e-6
    # (orthogonal weights are not independent, but their sum of squares is fixed: the std is exact)
    w = layer.weight.double()  # float64 sums: their rounding (~1e-16) stays out of the bound
    assert w.std().item() == pytest.approx(expected, rel=5 / (2 * n) ** 0.5)
    assert w.mean().item() == pytest.approx(0, abs=5 * expected / n**0.5)
    assert (layer.bias == 0).all()


def test_conv_fan_in_is_kernel_area_times_in_channels():
    assert fans(nn.Conv2d(64, 128, (3, 5)).weight) == (3 * 5 * 64, 3 * 5 * 128)


def test_orthogonal_rows_are_orthonormal():
    layer = init_model(nn.Conv2d(8, 16, 3), "orthogonal", seed=0)
    w = layer.weight.flatten(1).double()  # (16, 72), from a float32 Householder QR of a (72, 16) matrix
    # whose Q is orthonormal to within about m * n float32 roundings (Higham 2002, Theorem 19.4)
    torch.testing.assert_close(w @ w.T, torch.eye(16, dtype=torch.float64), atol=72 * 16 * EPS, rtol=0)


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))


SEEDED = [
    s
    for s in INITIALIZERS.list()
    if "seed" in inspect.signature(INITIALIZERS.get(s)).parameters and s != "fixup"
]


@pytest.mark.parametrize("scheme", SEEDED)
def test_seed_gives_identical_values(scheme, fashion_batch):
    options = {"batch": fashion_batch[:64]} if INITIALIZERS.meta(scheme)["needs_data"] else {}
    a, b, c = small_net(), small_net(), small_net()
    init_model(a, scheme, seed=3, **options)
    init_model(b, scheme, seed=3, **options)
    init_model(c, scheme, seed=4, **options)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_zeros_and_constant_make_units_identical_and_bias_option_sets_relu_bias():
    model = init_model(small_net(), "constant", value=0.01, bias=0.01)
    assert (model[0].weight == 0.01).all() and (model[3].bias == 0.01).all()
    out = model[:2](torch.rand(2, 1, 28, 28))
    assert torch.equal(out[:, 0], out[:, 5])  # the symmetry problem: every unit computes the same
    assert (init_model(small_net(), "kaiming_normal", bias=0.01)[0].bias == 0.01).all()


@pytest.fixture(scope="module")
def fashion_batch(fashion_mnist) -> torch.Tensor:
    """256 real Fashion-MNIST training images, standardised per channel, (256, 1, 28, 28)."""
    x = fashion_mnist.train_images[:256].float() / 255
    return (x - x.mean()) / x.std()


def deep_net() -> nn.Module:
    layers = [nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()]
    for _ in range(4):
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(8 * 28 * 28, 64), nn.ReLU(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def output_variances(model: nn.Module, batch: torch.Tensor) -> list[float]:
    outputs = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: outputs.append(o.var().item())) for m in weight_layers(model)
    ]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    return outputs


def test_lsuv_gives_unit_output_variance_on_a_real_batch(fashion_batch):
    model = init_model(deep_net(), "small_random")
    assert max(abs(v - 1) for v in output_variances(model, fashion_batch)) > 0.5  # far off before LSUV
    init_model(model, "lsuv", batch=fashion_batch[:128], tol=0.1)
    variances = output_variances(model, fashion_batch[:128])
    assert all(abs(v - 1) < 0.1 for v in variances), variances


def test_data_dependent_gives_zero_mean_unit_variance_channels(fashion_batch):
    model = init_model(deep_net(), "data_dependent", batch=fashion_batch, seed=0)
    conv, dims = model[2], (0, 2, 3)
    with torch.no_grad():
        x = model[:2](fashion_batch)
        z = conv(x)  # the second conv's output (N, 8, 28, 28)
        terms = F.conv2d(x.abs(), conv.weight.abs(), conv.bias.abs(), padding=1)  # sum |w x| + |b|
    # The init scaled the layer by the mean and std of its float32 output over n values, each a K-term
    # dot product; z recomputes it with the scaled weights. Rounding: 2K + 2 u of the terms sum |w x| + |b|
    # (already divided by sigma), and the init's float32 sums of n values, within 10 sqrt(n) u of their
    # magnitudes (Higham & Mary 2019): mean |z| + |b| for the mean, 1 + b^2 for the variance. The test's
    # own statistics are float64.
    k, n = conv.weight[0].numel(), z.numel() // z.shape[1]
    z, bias = z.double(), conv.bias.double().abs()
    ops = (2 * k + 2 + 10 * n**0.5) / 2  # in eps = 2 u
    assert_float32_close(z.mean(dims), 0, ops=ops, scale=terms.mean(dims) + z.abs().mean(dims) + 2 * bias)
    assert_float32_close(z.std(dims), 1, ops=ops, scale=terms.mean(dims) + 1 + bias**2)


def test_data_schemes_need_a_batch_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="batch="):
        init_model(small_net(), "lsuv")
    with pytest.raises(ConfigError, match="did you mean 'std'"):
        init_model(small_net(), "normal", sdt=1.0)
    with pytest.raises(ConfigError, match="did you mean 'kaiming_normal'"):
        init_model(small_net(), "kaiming_norml")
    with pytest.raises(ConfigError, match="fixup"):
        init_model(small_net(), "fixup")


class Block(ResidualBlock):
    """out = relu(x + W2 relu(W1 x)), no normalisation."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.fc2(F.relu(self.fc1(x))))

    def branch_layers(self) -> list[nn.Module]:
        return [self.fc1, self.fc2]


def residual_net(blocks: int = 20, width: int = 64) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, width),
        nn.ReLU(),
        *[Block(width) for _ in range(blocks)],
        nn.Linear(width, 10),
    )


def test_fixup_20_block_residual_net_without_norm_trains(fashion_mnist):
    torch.manual_seed(0)
    x = fashion_mnist.train_images[:256].float() / 255
    x = (x - x.mean()) / x.std()
    y = fashion_mnist.train_labels[:256]
    he = init_model(residual_net(), "kaiming_normal", seed=0)
    with torch.no_grad():
        assert F.cross_entropy(he(x), y).item() > 100  # plain He init: variance doubles per block

    model = init_model(residual_net(), "fixup", seed=0)
    assert model[3].fc2.weight.abs().sum() == 0 and model[-1].weight.abs().sum() == 0
    fc1 = model[3].fc1.weight.double()  # 64 x 64 normal weights: 5 standard errors, 5 / sqrt(2 n)
    assert fc1.std().item() == pytest.approx(math.sqrt(2 / 64) * 20**-0.5, rel=5 / (2 * fc1.numel()) ** 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # zero classifier: uniform predictions, log(10) for each of 256 samples, averaged in <= 256 roundings
    assert losses[0] == pytest.approx(math.log(10), rel=256 * EPS)
    assert math.isfinite(losses[-1]) and losses[-1] < 0.4 * losses[0], losses  # 2.30 -> ~0.53
