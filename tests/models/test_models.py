"""Every registered model: forward, backward, output shape, no NaN, a gradient on every parameter;
pinned parameter counts; act / norm reach every layer; residual blocks expose their branch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.config import load_config
from trainlab.errors import ConfigError
from trainlab.models import create_model, list_models, model_options
from trainlab.models.googlenet import GoogLeNetOutputs
from trainlab.models.resnet import BasicBlock, Bottleneck
from trainlab.nn.activations import create_activation
from trainlab.nn.layers import ResidualBlock
from trainlab.nn.norm import create_norm
from trainlab.nn.shapes import conv_output_size
from trainlab.vision_run import DEFAULT_RECIPES

# Published totals with 1000 classes and biases (torchvision's counts for the same architectures).
PUBLISHED_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# Ours, pinned: vgg13 (the paper's 133M), googlenet with BN and true 5x5 convs,
# the *_bn variants (BN after every conv and hidden FC, so not torchvision's *_bn counts).
PINNED_PARAMS = {"vgg13": 133_047_848, "googlenet": 7_005_832, "vgg16_bn": 138_369_960}


@pytest.fixture(autouse=True)
def one_thread():
    """Batch-2 passes are hundreds of small ops: on a busy 2-core machine, two OpenMP threads spin-wait
    on each other and run several times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The scenes tasks' models (boxes, heatmaps, per-pixel scores), tested below at the canvas size.
VISION = {load_config(recipe).model.name for recipe in DEFAULT_RECIPES.values()}
# About 1 GMAC or more per 28x28 example: these run at 1x16x16 by default, at 28 and 32 with -m slow.
HEAVY = {"resnet34", "resnet50", "resnet101", "resnet152"}
CASES = [
    pytest.param(name, shape, id=f"{name}-{shape[0]}x{shape[1]}x{shape[1]}", marks=[pytest.mark.slow] * slow)
    for name in list_models()
    if name not in VISION
    for shape, slow in (((1, 28), name in HEAVY), ((3, 32), name in HEAVY), ((1, 16), False))
    if name in HEAVY or shape[1] != 16
]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_forward_backward(name, shape):
    channels, size = shape
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, num_classes=10, image_size=size)
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([1, 7])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


def tensors_of(out) -> list[torch.Tensor]:
    if isinstance(out, dict):
        return [t for v in out.values() for t in tensors_of(v)]
    return [t for v in out for t in tensors_of(v)] if isinstance(out, tuple | list) else [out]


@pytest.mark.parametrize("name", sorted(VISION))
def test_vision_models_forward_and_backward_on_a_canvas(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=10, image_size=64)
    outputs = tensors_of(model(torch.randn(2, 1, 64, 64)))
    assert outputs and all(o.shape[0] == 2 and torch.isfinite(o).all() for o in outputs)
    sum(o.float().square().mean() for o in outputs).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS.keys() | PINNED_PARAMS.keys()))
def test_parameter_counts(name):
    with torch.device("meta"):  # no memory, no initialisation cost
        model = create_model(name, in_channels=3, num_classes=1000, image_size=224)
    assert count_params(model) == {**PUBLISHED_PARAMS, **PINNED_PARAMS}[name]


def test_lenet5_has_the_classic_61706_parameters_at_28_and_32():
    for size in (28, 32):
        assert count_params(create_model("lenet5", in_channels=1, num_classes=10, image_size=size)) == 61_706


def test_lenet5_rejects_a_size_the_pools_cannot_halve():
    with pytest.raises(ConfigError, match="not a positive integer"):
        create_model("lenet5", image_size=33)  # 29 -> 14.5


@pytest.mark.parametrize("name", [n for n in list_models() if {"act", "norm"} <= model_options(n).keys()])
def test_act_and_norm_reach_every_layer(name):
    with torch.device("meta"):
        model = create_model(name, in_channels=3, num_classes=10, image_size=32, act="gelu", norm="group")
    kinds = {type(m) for m in model.modules()}
    relu, gelu = type(create_activation("relu")), type(create_activation("gelu"))
    batch, group = type(create_norm("batch", 8)), type(create_norm("group", 8))
    assert relu not in kinds and batch not in kinds and nn.BatchNorm2d not in kinds
    assert gelu in kinds and group in kinds


@pytest.mark.parametrize(
    "name", ["alexnet", "vgg11", "vgg11_bn", "googlenet", "resnet18", "resnet50", "lenet5"]
)
def test_layers_have_a_bias_only_without_a_norm(name):
    for norm, bias in (("none", True), ("batch", False)):
        with torch.device("meta"):
            model = create_model(name, in_channels=3, num_classes=10, image_size=32, norm=norm)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all((m.bias is not None) == bias for m in convs)


@pytest.mark.parametrize(("size", "kernel"), [(28, 3), (32, 3), (224, 7)])
def test_resnet_stem_follows_the_input_size(size, kernel):
    model = create_model("resnet18", in_channels=3, image_size=size)
    assert model.stem[0].kernel_size == (kernel, kernel)
    forced = create_model("resnet18", in_channels=3, image_size=size, small_input=size > 64)
    assert forced.stem[0].kernel_size != (kernel, kernel)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_residual_blocks_expose_their_branch(name):
    with torch.device("meta"):
        model = create_model(name, in_channels=3, image_size=32)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == (8 if name == "resnet18" else 16)
    for block in blocks:
        convs = block.branch_layers()
        assert len(convs) == (2 if isinstance(block, BasicBlock) else 3)
        assert all(isinstance(c, nn.Conv2d) for c in convs)
        assert all(a.out_channels == b.in_channels for a, b in zip(convs, convs[1:]))  # input side first
        assert isinstance(block, (BasicBlock, Bottleneck))


def test_googlenet_aux_heads_only_in_training():
    torch.manual_seed(0)
    model = create_model("googlenet", in_channels=1, num_classes=10, image_size=16, aux_logits=True)
    out = model(torch.randn(2, 1, 16, 16))
    assert isinstance(out, GoogLeNetOutputs) and all(o.shape == (2, 10) for o in out)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 16, 16)).shape == (2, 10)


def test_conv_output_size():
    assert conv_output_size(224, 3, 1, 1) == 224  # VGG's 3x3, pad 1 keeps the size
    assert conv_output_size(227, 11, 0, 4) == 55  # AlexNet's first layer on the original 227x227
    assert conv_output_size(7, 3, 0, 2) == 3
    with pytest.raises(ConfigError, match=r"\(7 \+ 2\*0 - 3\) / 3 \+ 1") as error:
        conv_output_size(7, 3, 0, 3)  # the lectures' example: a 3x3 filter at stride 3 does not fit 7x7
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError):
        conv_output_size(224, 11, 2, 4)  # AlexNet's 224x224 input: 55.25


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet", "resnet50", "googlenet"])
def test_forward_at_224(name):
    model = create_model(name, in_channels=3, num_classes=1000, image_size=224).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
