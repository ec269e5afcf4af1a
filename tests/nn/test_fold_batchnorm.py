"""fold_batchnorm over every registered model, and the data flows where a BN must not be folded."""

import math

import pytest
import torch
from torch import nn

import trainlab
from tests.tolerance import EPS, assert_float32_close
from trainlab.models import MODELS, model_options
from trainlab.nn.norm import BatchNorm

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def is_bn(m: nn.Module) -> bool:
    return isinstance(m, (BatchNorm, nn.modules.batchnorm._BatchNorm))


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """BN statistics and affine parameters far from (0, 1), so that a BN left out or folded wrongly
    moves the output by O(1); gamma > 0, so BNs after a max pool can fold too."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in filter(is_bn, model.modules()):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.25, 4)
            m.weight.uniform_(0.5, 2)
            m.bias.uniform_(-1, 1)
    return model.eval()


def bns_fed_by_a_layer(model: nn.Module, x: torch.Tensor) -> int:
    """BN calls whose input is a conv / linear output, or a max pool of one, seen by forward hooks
    (object identity of the tensors), independently of the fx tracing that fold_batchnorm uses."""
    made_by = {}  # id(output) -> (module, its input, output): held, so no id is reused during the forward
    count = 0

    def record(m, inputs, out):
        nonlocal count
        if is_bn(m):
            source, source_input, _ = made_by.get(id(inputs[0]), (None, None, None))
            if isinstance(source, POOLS):
                source, _, _ = made_by.get(id(source_input), (None, None, None))
            count += type(source) in LAYERS
        made_by[id(out)] = (m, inputs[0], out)

    handles = [m.register_forward_hook(record) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return count


def assert_folded_equal(folded: nn.Module, model: nn.Module, x: torch.Tensor) -> None:
    """Outputs equal within the float32 rounding of both forwards.

    Each conv / linear output is a dot product of K <= K_max terms, within 10 sqrt(K) u of its magnitude
    in any summation order (Higham & Mary 2019; u = eps / 2), and folding replaces the BN's 4 rounded
    ops by the rounding of W' and b'. BN keeps activations O(1) in eval, so a relative error passes on
    through a layer without growing and the L layers' errors add: ops = 2 (both models) x L x
    (10 sqrt(K_max) + 4) of the output's magnitude (max |y|).
    """
    layers = [m for m in model.modules() if type(m) in LAYERS]
    k_max = max(m.weight[0].numel() for m in layers)  # fan-in: C_in / groups x kernel size, or in_features
    with torch.no_grad():
        expected, actual = model(x), folded(x)
    ops = 2 * len(layers) * (10 * math.sqrt(k_max) + 4)
    assert ops * EPS < 0.05  # the bound stays far below the O(1) error of a BN mis-folded
    assert_float32_close(actual, expected, ops=ops, scale=expected.abs().max())


@pytest.mark.parametrize("name", MODELS.list())
def test_every_model_folds_every_bn_after_a_layer(name):
    model = randomise_batchnorm(trainlab.create_model(name, norm="batch"))
    x = torch.randn(2, 1, 28, 28)
    before = bns_fed_by_a_layer(model, x)
    assert before == sum(map(is_bn, model.modules())) > 0  # every BN in the registry follows a layer
    folded = trainlab.fold_batchnorm(model)
    assert type(folded) is type(model) and not folded.training  # an eval-mode copy of the same class
    assert bns_fed_by_a_layer(folded, x) == 0
    assert sum(map(is_bn, model.modules())) == before  # the original is left alone
    assert_folded_equal(folded, model, x)


@pytest.mark.parametrize("name", [n for n in MODELS.list() if model_options(n)["norm"] == "none"])
def test_models_without_norm_are_unchanged(name):
    model = trainlab.create_model(name).eval()  # norm="none" by default: nothing to fold
    folded = trainlab.fold_batchnorm(model)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(folded(x), model(x))


class ConvBlock(nn.Module):
    """An attribute-based block: conv -> BN -> ReLU, with the conv's output also used by the shortcut
    when `reuse` (then the BN must stay: folding it would change what the shortcut adds)."""

    def __init__(self, reuse: bool = False):
        super().__init__()
        self.conv, self.bn, self.reuse = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), reuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        return torch.relu(self.bn(z)) + (z if self.reuse else x)


class Untraceable(nn.Module):
    """Python control flow on a tensor value, which torch.fx cannot trace, around a traceable block."""

    def __init__(self):
        super().__init__()
        self.block, self.conv, self.bn = ConvBlock(), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return self.bn(self.conv(x)) if x.sum() > 0 else x


def bn_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if is_bn(m)]


def fold_and_compare(model: nn.Module) -> nn.Module:
    folded = trainlab.fold_batchnorm(model)
    assert_folded_equal(folded, model, torch.randn(2, 3, 8, 8))
    return folded


def test_attribute_based_block_folds():
    assert bn_names(fold_and_compare(randomise_batchnorm(ConvBlock()))) == []


def test_bn_whose_conv_output_is_also_used_elsewhere_is_kept():
    assert bn_names(fold_and_compare(randomise_batchnorm(ConvBlock(reuse=True)))) == ["bn"]


class TwoConvsOneBN(nn.Module):
    """One BN module called after two convs; or, with `tied`, two convs sharing one weight."""

    def __init__(self, tied: bool = False):
        super().__init__()
        self.conv1, self.conv2, self.bn = nn.Conv2d(3, 3, 3), nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)
        if tied:
            self.conv2.weight = self.conv1.weight
        self.tied = tied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tied:  # folding bn into conv1 would rescale conv2's (shared) weight too
            return self.bn(self.conv1(x)) + self.conv2(x)
        return self.bn(self.conv1(x)) + self.bn(self.conv2(x))


@pytest.mark.parametrize("tied", [False, True], ids=["bn-called-twice", "tied-conv-weights"])
def test_shared_bn_or_weight_is_kept(tied):
    assert bn_names(fold_and_compare(randomise_batchnorm(TwoConvsOneBN(tied)))) == ["bn"]


def test_bn_after_a_max_pool_folds_only_without_negative_scales():
    model = randomise_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4)))
    assert bn_names(fold_and_compare(model)) == []  # max(s z + b) = s max(z) + b for s >= 0
    with torch.no_grad():
        model[2].weight[1] = -1.0  # max(-z) = -min(z): this BN cannot move before the pool
    assert bn_names(fold_and_compare(model)) == ["2"]


def test_untraceable_forward_falls_back_to_its_children():
    """The block inside is traced and folded; the BN that only the untraceable forward calls stays."""
    assert bn_names(fold_and_compare(randomise_batchnorm(Untraceable()))) == ["bn"]
