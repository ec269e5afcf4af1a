"""Fixup (Zhang et al. 2019) in every registered model with residual blocks: the scalar biases and
multipliers exist without a norm, sit where the paper puts them and are initialised as it says; models
with a norm have none; and a 50-layer ResNet without normalisation trains at its BN twin's lr."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import trainlab
from tests.tolerance import EPS
from trainlab.config import OptimConfig
from trainlab.models import MODELS
from trainlab.models.resnet import BasicBlock, Bottleneck
from trainlab.nn.init import fans, init_model
from trainlab.nn.layers import ResidualBlock, ScalarBias, ScalarMultiplier, fixup_scalars
from trainlab.training.optim import create_optimizer


def blocks_of(model: nn.Module) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


def has_residual_blocks(name: str) -> bool:
    with torch.device("meta"):
        return bool(blocks_of(trainlab.create_model(name, norm="none")))


RESIDUAL = [name for name in MODELS.list() if has_residual_blocks(name)]


@pytest.fixture(params=RESIDUAL)
def residual_model(request) -> str:  # every registered model with residual blocks, found by building it
    return request.param


def test_the_registry_has_residual_models():
    assert {"resnet18", "resnet50"} <= set(RESIDUAL)


def test_without_a_norm_each_branch_has_a_bias_before_every_layer_and_activation_and_one_multiplier(
    residual_model,
):
    with torch.device("meta"):
        model = trainlab.create_model(residual_model, norm="none")
    for block in blocks_of(model):
        scalars = fixup_scalars(block)
        m = len(block.branch_layers())
        # m layers, m - 1 activations inside the branch, and the bias after the multiplier at its end
        assert sum(isinstance(s, ScalarBias) for s in scalars) == 2 * m
        assert sum(isinstance(s, ScalarMultiplier) for s in scalars) == 1
    in_blocks = {id(s) for block in blocks_of(model) for s in fixup_scalars(block)}
    outside = [s for s in fixup_scalars(model) if id(s) not in in_blocks]
    assert len(outside) == 1 and isinstance(outside[0], ScalarBias)  # the one before the classifier
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    order = list(model.modules())
    assert order.index(classifier) - order.index(outside[0]) == 1


def test_with_a_norm_there_are_no_scalars(residual_model):
    with torch.device("meta"):
        model = trainlab.create_model(residual_model, norm="batch")
    assert fixup_scalars(model) == []  # the scalar slots are nn.Identity: no parameters, same output


@torch.no_grad()
def test_fixup_init_sets_scalars_zero_last_layers_and_scaled_branches(residual_model):
    model = trainlab.create_model(residual_model, norm="none")
    for p in model.parameters():  # as after training: fixup must set every value itself
        p.uniform_(0.5, 1.5)
    init_model(model, "fixup", seed=0)
    for s in fixup_scalars(model):
        expected = 1.0 if isinstance(s, ScalarMultiplier) else 0.0
        assert all((p == expected).all() for p in s.parameters()), s
    blocks = blocks_of(model)
    scaled = []
    for block in blocks:
        *inner, last = block.branch_layers()
        assert (last.weight == 0).all() and (last.bias == 0).all()
        for layer in inner:  # He std sqrt(2 / fan_in) times L^(-1 / (2m - 2))
            std = math.sqrt(2 / fans(layer.weight)[0]) * len(blocks) ** (-1 / (2 * len(inner)))
            scaled.append(layer.weight.double().flatten() / std)
            assert (layer.bias == 0).all()
    z = torch.cat(scaled)  # pooled, standardised: std 1 within 5 standard errors 5 / sqrt(2 n)
    assert z.std().item() == pytest.approx(1.0, rel=5 / (2 * z.numel()) ** 0.5)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert (classifier.weight == 0).all() and (classifier.bias == 0).all()


@torch.no_grad()
def test_after_fixup_every_block_is_its_shortcut_and_the_logits_are_zero(residual_model):
    torch.manual_seed(0)
    model = trainlab.create_model(residual_model, norm="none", init="fixup")
    seen = []

    def check(block: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        # F(x) = 1 * conv(...) + 0 with a zero last conv is exactly 0, so out = act(shortcut(x))
        assert torch.equal(out, block.act(block.shortcut(inputs[0])))
        seen.append(block)

    for block in blocks_of(model):
        block.register_forward_hook(check)
    logits = model(torch.randn(2, 1, 28, 28))
    assert len(seen) == len(blocks_of(model)) and (logits == 0).all()


def random_scalars(block: nn.Module) -> None:
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_scalars_sit_where_the_paper_puts_them(block_type):
    torch.manual_seed(0)
    block = block_type(8, 4, stride=2, norm="none")
    random_scalars(block)
    x = torch.randn(2, 8, 6, 6)
    convs = block.branch_layers()
    out = x
    for i, conv in enumerate(convs):
        pre = getattr(block, f"bias{i + 1}").bias  # before each conv
        out = conv(out + pre)
        if i < len(convs) - 1:
            out = F.relu(out + getattr(block, f"norm{i + 1}").bias)  # before each activation
    multiplier, bias = getattr(block, f"norm{len(convs)}")
    residual = multiplier.weight * out + bias.bias  # s * F + b at the branch's end
    # the same ops in the same order as the block's forward: bit-identical
    assert torch.equal(block(x), F.relu(block.shortcut(x) + residual))


def test_the_optimiser_trains_the_scalars_in_their_own_group_at_a_scaled_lr():
    model = trainlab.create_model("resnet18", norm="none", init="fixup")
    cfg = OptimConfig(lr=0.4, weight_decay=5e-4, fixup_scalar_lr_scale=0.1)
    *others, scalars = create_optimizer(model, cfg).param_groups
    expected = {id(p) for s in fixup_scalars(model) for p in s.parameters()}
    assert {id(p) for p in scalars["params"]} == expected and len(expected) == 8 * (
        4 + 1
    ) + 1  # 8 blocks: 4 biases, 1 multiplier
    assert scalars["lr"] == 0.4 * 0.1 and scalars["weight_decay"] == 0.0
    assert all(g["lr"] == 0.4 and not expected & {id(p) for p in g["params"]} for g in others)
    n = sum(len(g["params"]) for g in others) + len(expected)
    assert n == len(list(model.parameters()))  # every parameter in exactly one group
    bn = create_optimizer(trainlab.create_model("resnet18"), cfg)
    assert len(bn.param_groups) == 2  # no scalars: the optimiser state keeps its two groups


LR = 0.1  # the BN twin's: He et al. 2015's ResNet lr with momentum 0.9, and trainlab's default recipe peak
SCALAR_LR = LR / 100  # Fixup's scalars: see train()


def small_fashion(split_images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple:
    """n Fashion-MNIST images, standardised and area-downsampled 28 -> 7 pixels: resnet50's 23.5M
    weights still all take part (the stages run at 7, 4, 2, 1 pixels), at a sixteenth of the compute."""
    x = split_images[:n].float() / 255
    return F.interpolate((x - 0.2860) / 0.3530, size=(7, 7), mode="area"), labels[:n]  # train mean, std


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, scalar_lr: float = SCALAR_LR
) -> list[float]:
    """SGD, momentum 0.9, batches of 128, lr LR after a linear warmup over 10 steps, Fixup's scalars at
    `scalar_lr` through trainlab's optimiser (optim.fixup_scalar_lr_scale): at LR they make this resnet50
    diverge, and at the paper's LR / 10 it learned on only 2 of 4 seeds in 20 steps
    (docs/initialization.md). Each step's training loss, up to the first non-finite one."""
    cfg = OptimConfig(
        lr=LR, momentum=0.9, nesterov=False, weight_decay=0.0, fixup_scalar_lr_scale=scalar_lr / LR
    )
    opt = create_optimizer(model, cfg)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 10))
    losses = []
    for i in range(steps):
        loss = F.cross_entropy(model(x[i * 128 : (i + 1) * 128]), y[i * 128 : (i + 1) * 128])
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model.eval()(x).argmax(1) == y).float().mean().item()


def resnet50(norm: str, init: str | None) -> nn.Module:
    torch.manual_seed(0)  # the default init draws from the global generator
    return trainlab.create_model("resnet50", norm=norm, init=init, init_options={"seed": 0} if init else None)


def test_fixup_resnet50_without_norm_trains_at_the_bn_lr_where_he_init_diverges(fashion_mnist):
    x, y = small_fashion(fashion_mnist.train_images, fashion_mnist.train_labels, 16 * 128)
    x_test, y_test = small_fashion(fashion_mnist.test_images, fashion_mnist.test_labels, 1000)
    he = train(resnet50("none", "kaiming_normal"), x, y, steps=3)  # the variance doubles in every block
    assert he[0] > 10 * math.log(10) and not math.isfinite(he[-1]), he  # measured: 85, 2e14, nan

    model = resnet50("none", "fixup")
    losses = train(model, x, y, steps=16)
    # zero classifier: logits exactly 0, log 10 for each of 128 samples, averaged in <= 128 roundings
    assert losses[0] == pytest.approx(math.log(10), rel=128 * EPS)
    # measured with seeds 0 to 3: the last 5 steps average 1.82 to 1.89, test accuracy 27 to 36%
    # (chance: 10%, with a standard deviation of 1% over 1000 images)
    assert all(math.isfinite(v) for v in losses) and sum(losses[-5:]) / 5 < 2.05, losses
    assert accuracy(model, x_test, y_test) > 0.2


# the rows of docs/initialization.md's table: (norm, init, the scalars' lr)
TABLE = [
    ("batch", None, SCALAR_LR),
    ("none", None, SCALAR_LR),
    ("none", "kaiming_normal", SCALAR_LR),
    ("none", "fixup", LR),
    ("none", "fixup", LR / 10),
    ("none", "fixup", LR / 100),
    ("none", "fixup", 0.0),
]


@pytest.mark.slow
def test_fixup_resnet50_60_steps_against_its_bn_twin_and_other_inits(fashion_mnist, capsys):
    """docs/initialization.md's table (about 6 minutes on one core); `-s` prints its rows."""
    x, y = small_fashion(fashion_mnist.train_images, fashion_mnist.train_labels, 60 * 128)
    x_test, y_test = small_fashion(fashion_mnist.test_images, fashion_mnist.test_labels, 1000)
    runs = {}
    for norm, init, scalar_lr in TABLE:
        model = resnet50(norm, init)
        losses = train(model, x, y, steps=60, scalar_lr=scalar_lr)
        if math.isfinite(losses[-1]):
            runs[norm, init, scalar_lr] = losses, accuracy(model, x_test, y_test)
            end = f"last 10 {sum(losses[-10:]) / 10:.3g}, test accuracy {runs[norm, init, scalar_lr][1]:.1%}"
        else:
            runs[norm, init, scalar_lr] = losses, None
            end = f"non-finite at step {len(losses)}"
        with capsys.disabled():
            print(f"\n{norm} {init}, scalars lr {scalar_lr:g}: first {losses[0]:.3g}, {end}")
    fixup, default = runs["none", "fixup", SCALAR_LR], runs["none", None, SCALAR_LR]
    assert sum(fixup[0][-10:]) / 10 < 1.5 and fixup[1] > 0.5  # measured: 2.30 -> 0.95, 66%
    # measured: log 10 for about 40 steps, 13%
    assert all(abs(v - math.log(10)) < 0.05 for v in default[0][:30]) and default[1] < fixup[1] - 0.3
    assert not math.isfinite(runs["none", "fixup", LR][0][-1])  # the scalars at the weights' lr
    assert not math.isfinite(runs["none", "kaiming_normal", SCALAR_LR][0][-1])
    assert len(runs["batch", None, SCALAR_LR][0]) == 60  # BN twin: finite, if erratic
