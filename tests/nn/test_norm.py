"""trainlab's BatchNorm against torch, train/eval/frozen behaviour, fold_batchnorm, and every norm by name."""

import pytest
import torch
from torch import nn

from tests.tolerance import assert_float32_close
from trainlab.errors import ConfigError
from trainlab.models import create_model
from trainlab.nn.norm import NORMS, BatchNorm, create_norm, fold_batchnorm, freeze_batchnorm

SHAPES = [(8, 5, 6, 7), (16, 6), (4, 3, 10)]

# The formula checks run in float64, where rounding cannot reach 1e-9: each value is a chain of at most
# ~1e4 rounded terms (batch statistics over n <= 336 values, conv sums of K <= 288 terms, a few layers),
# each within eps64 = 2.2e-16 of magnitudes <= 1e2 times the value's scale (Higham 2002, section 3.1),
# so 1e4 * 1e2 * eps64 = 2.2e-10. Any formula difference is far above it (biased vs unbiased variance:
# 1/n >= 3e-3; eps inside vs outside the sqrt: 1e-5 / var ~ 1e-6).
FLOAT64 = {"rtol": 1e-9, "atol": 1e-9}


def run_steps(bn: nn.Module, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and input gradients for a few training steps (running stats move between them)."""
    outs, grads = [], []
    for x in xs:
        x = x.clone().requires_grad_(True)
        y = bn(x)
        (y * torch.linspace(-1, 2, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()  # non-uniform
        outs.append(y.detach())
        grads.append(x.grad)
    return outs, grads


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fused", [True, False])
def test_batchnorm_matches_torch_forward_backward_and_running_stats(shape, fused):
    torch.manual_seed(0)
    ours, ref = BatchNorm(shape[1], fused=fused).double(), nn.BatchNorm2d(shape[1]).double()
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 2, shape[1]))
            m.bias.copy_(torch.linspace(-1, 1, shape[1]))
    ref._check_input_dim = lambda x: None  # the same math serves 1d inputs
    xs = [torch.randn(shape, dtype=torch.float64) * 3 + 1 for _ in range(3)]
    (out_a, grad_a), (out_b, grad_b) = run_steps(ours, xs), run_steps(ref, xs)
    for a, b in zip(out_a + grad_a, out_b + grad_b):
        torch.testing.assert_close(a, b, **FLOAT64)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **FLOAT64)
    torch.testing.assert_close(ours.running_var, ref.running_var, **FLOAT64)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **FLOAT64)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **FLOAT64)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(xs[0]), ref(xs[0]), **FLOAT64)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    fresh = BatchNorm(shape[1]).double().eval()
    fresh.load_state_dict(ref.state_dict())  # a torch checkpoint loads into ours
    torch.testing.assert_close(fresh(xs[1]), ref(xs[1]))


def test_train_uses_batch_stats_and_eval_uses_running_stats():
    bn = BatchNorm(4)
    x = torch.randn(64, 4, 5, 5) * 2 + 3
    y = bn(x)  # training: normalised by this batch, so mean 0 / var var / (var + eps) per channel
    n, dims = 64 * 5 * 5, (0, 2, 3)
    var = x.double().var(dims, unbiased=False)
    # the batch statistics and the test's statistics are sums of n float32 terms each: n eps of the
    # summed magnitudes (|x| / sigma for the mean, x_hat^2 for the variance), plus a few elementwise ops
    assert_float32_close(y.mean(dims), 0, ops=n, scale=(x.abs().mean(dims) / var.sqrt() + y.abs().mean(dims)))
    assert_float32_close(y.var(dims, unbiased=False), var / (var + bn.eps), ops=2 * n, scale=1.0)
    # 0.1 of the way to a mean of 3 (std 2 over 4 * n samples): within 5 standard errors
    assert bn.running_mean.mean().item() == pytest.approx(0.3, abs=0.1 * 5 * 2 / (4 * n) ** 0.5)
    bn.eval()
    before = bn.running_mean.clone()
    expected = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(bn(x), expected)
    assert torch.equal(bn.running_mean, before)


def test_frozen_mode_survives_train_and_keeps_running_stats():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNorm(4))
    freeze_batchnorm(model)
    model.train()
    bn = model[1]
    assert bn.training and bn.frozen
    before = (bn.running_mean.clone(), bn.running_var.clone())
    x = torch.randn(8, 3, 6, 6) * 5
    y = model(x)
    z = model[0](x)
    torch.testing.assert_close(
        y, (z - before[0].view(1, -1, 1, 1)) / torch.sqrt(before[1].view(1, -1, 1, 1) + 1e-5)
    )
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    freeze_batchnorm(model, frozen=False)
    model(x)
    assert not torch.equal(bn.running_mean, before[0])


def trained_stats(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Give every BN non-trivial gamma, beta and running statistics, as after training."""
    torch.manual_seed(0)
    model.train()
    for _ in range(3):
        model(torch.randn(shape, dtype=next(model.parameters()).dtype) * 2 + 0.5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize(
    "name,options",
    [("cnn", {}), ("cnn", {"widths": (8, 16, 32)}), ("mlp", {"norm": "batch"})],
    ids=["cnn", "cnn-narrow", "mlp-bn"],
)
def test_fold_batchnorm_equals_unfolded_in_eval(name, options):
    model = trained_stats(create_model(name, **options).double(), (16, 1, 28, 28))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, (BatchNorm, nn.BatchNorm2d)) for m in folded.modules())
    assert any(isinstance(m, BatchNorm) for m in model.modules())  # the original is left alone
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), **FLOAT64)


def test_fold_batchnorm_handles_torch_bn_and_conv_with_bias():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=True), nn.BatchNorm2d(6), nn.ReLU(), nn.BatchNorm2d(6))
    model = trained_stats(model.double(), (8, 3, 10, 10))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3], nn.BatchNorm2d)  # after ReLU: kept
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), **FLOAT64)


@pytest.mark.parametrize("name", NORMS.list())
@pytest.mark.parametrize("dim", [1, 2])
def test_every_norm_by_name_forward_backward(name, dim):
    if name == "instance" and dim == 1:
        with pytest.raises(ConfigError, match="instance"):
            create_norm(name, 12, dim=dim)
        return
    norm = create_norm(name, 12, dim=dim)
    x = (torch.randn(4, 12, 5, 5) if dim == 2 else torch.randn(4, 12)).requires_grad_(True)
    y = norm(x)
    y.square().sum().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    if name != "none":
        assert y.abs().mean() < 2  # normalised


def test_create_norm_batch_is_trainlab_batchnorm_and_group_divides():
    assert isinstance(create_norm("batch", 8), BatchNorm)
    assert isinstance(create_norm("batch", 8, dim=1), BatchNorm)
    assert create_norm("group", 48).num_groups == 24
    assert create_norm("group", 64).num_groups == 32
    with pytest.raises(ConfigError, match="did you mean 'batch'"):
        create_norm("bach", 8)
    with pytest.raises(ConfigError, match="dim"):
        create_norm("batch", 8, dim=3)
