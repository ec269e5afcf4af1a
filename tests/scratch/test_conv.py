"""Convolution and pooling (im2col / col2im): gradient-checked by centred differences in float64 on random
shapes, cross-checked against torch.nn.functional in float64, and LeNet-5 against trainlab's torch lenet5
with the same weights."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainlab.errors import ConfigError, TrainlabError
from trainlab.models.lenet import lenet5 as torch_lenet5
from trainlab.scratch.conv import AvgPool2d, Conv2d, MaxPool2d, lenet5
from trainlab.scratch.gradcheck import gradient_check

# float64 on both sides: the same sums in another order differ by a few ulps (1e-16 relative) of the
# terms' magnitude, O(1) here, so 1e-10 is the cross-check's bar with room to spare.
RTOL, ATOL = 1e-10, 1e-12


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def float64_conv(c_in, c_out, k, stride, padding, rng):
    conv = Conv2d(c_in, c_out, k, stride, padding, rng=rng, dtype=np.float64)
    conv.params["b"] = rng.standard_normal(c_out)  # not 0, so that a wrong db shows
    return conv


@st.composite
def conv_cases(draw):
    """(N, C_in, C_out, k, stride, padding, H, W, seed), with the padded input at least one kernel wide."""
    k, stride, padding = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h, w = (draw(st.integers(max(1, k - 2 * padding), 8)) for _ in range(2))
    n, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return n, c_in, c_out, k, stride, padding, h, w, draw(st.integers(0, 2**32 - 1))


@st.composite
def pool_cases(draw):
    """(N, C, k, stride, H, W, seed); stride below the kernel makes windows overlap."""
    k, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(k, 7)), draw(st.integers(k, 7))
    return draw(st.integers(1, 2)), draw(st.integers(1, 3)), k, stride, h, w, draw(st.integers(0, 2**32 - 1))


EPS = 1e-6  # gradient_check's centred-difference step


def distinct_values(shape, rng) -> np.ndarray:
    """An input away from ties in max pooling: a shuffled, evenly spaced grid in [-2, 2), so no two values
    are closer than 4/size > 2 eps, and a perturbation of eps never changes which element is a window's
    max (at a tie the max has no derivative)."""
    size = int(np.prod(shape))
    assert 4 / size > 2 * EPS
    return (rng.permutation(size) * (4 / size) - 2).reshape(shape)


# Conv and average pooling are linear in each input and parameter, and max pooling piecewise linear, so the
# centred differences have no truncation error, only rounding (about 1e-16 |L| / eps).
@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_conv_gradients_match_centred_differences(case):
    n, c_in, c_out, k, stride, padding, h, w, seed = case
    rng = np.random.default_rng(seed)
    conv = float64_conv(c_in, c_out, k, stride, padding, rng)
    # linear in x, W and b: no truncation error at any step, so a larger one shrinks the rounding error
    # 1e-16 |L| / eps, which at eps 1e-6 reached 1.1e-7 of the gradient on one drawn case (a large |L|
    # from the random bias, a small dL/dx)
    errors = gradient_check(conv, rng.standard_normal((n, c_in, h, w)), eps=1e-3, seed=seed)
    assert errors.keys() == {"W", "b", "x"}
    assert max(errors.values()) < 1e-7, errors


@settings(max_examples=30, deadline=None)
@given(pool_cases(), st.sampled_from([MaxPool2d, AvgPool2d]))
def test_pool_gradients_match_centred_differences(case, pool):
    n, c, k, stride, h, w, seed = case
    rng = np.random.default_rng(seed)
    errors = gradient_check(pool(k, stride), distinct_values((n, c, h, w), rng), eps=EPS, seed=seed)
    assert errors.keys() == {"x"}
    assert errors["x"] < 1e-7, errors


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_conv_forward_and_backward_match_torch(case):
    n, c_in, c_out, k, stride, padding, h, w, seed = case
    rng = np.random.default_rng(seed)
    conv = float64_conv(c_in, c_out, k, stride, padding, rng)
    x = rng.standard_normal((n, c_in, h, w))
    out = conv.forward(x)
    G = rng.standard_normal(out.shape)
    dx = conv.backward(G)

    x_t, W_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, conv.params["W"], conv.params["b"]))
    out_t = F.conv2d(x_t, W_t, b_t, stride, padding)
    out_t.backward(torch.tensor(G))
    assert_close(out, out_t.detach().numpy())
    assert_close(dx, x_t.grad.numpy())
    assert_close(conv.grads["W"], W_t.grad.numpy())
    assert_close(conv.grads["b"], b_t.grad.numpy())


@settings(max_examples=30, deadline=None)
@given(pool_cases(), st.sampled_from([(MaxPool2d, F.max_pool2d), (AvgPool2d, F.avg_pool2d)]))
def test_pool_forward_and_backward_match_torch(case, pools):
    n, c, k, stride, h, w, seed = case
    pool, torch_pool = pools
    rng = np.random.default_rng(seed)
    x = distinct_values((n, c, h, w), rng)  # ties: torch and we may pick different maxima, both valid
    layer = pool(k, stride)
    out = layer.forward(x)
    G = rng.standard_normal(out.shape)
    dx = layer.backward(G)

    x_t = torch.tensor(x, requires_grad=True)
    out_t = torch_pool(x_t, k, stride)
    out_t.backward(torch.tensor(G))
    assert_close(out, out_t.detach().numpy())
    assert_close(dx, x_t.grad.numpy())


def test_overlapping_max_pool_adds_the_gradient_of_every_window_a_pixel_wins():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0  # the max of all nine 3x3 windows at stride 1
    pool = MaxPool2d(3, stride=1)
    pool.forward(x)
    dx = pool.backward(np.ones((1, 1, 3, 3)))
    assert dx[0, 0, 2, 2] == 9.0 and dx.sum() == 9.0


def test_conv_output_size_is_n_plus_2p_minus_f_over_stride_plus_one():
    """(7 + 2*1 - 3) // 2 + 1 = 4; and like PyTorch, a stride that does not tile drops the last column:
    (8 - 3) // 2 + 1 = 3."""
    conv = Conv2d(2, 5, 3, stride=2, padding=1, rng=0)
    assert conv.forward(np.zeros((3, 2, 7, 8), np.float32)).shape == (3, 5, 4, 4)
    assert MaxPool2d(3, 2).forward(np.zeros((1, 1, 8, 8))).shape == (1, 1, 3, 3)
    assert AvgPool2d(2).forward(np.zeros((1, 1, 7, 6))).shape == (1, 1, 3, 3)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    conv = Conv2d(3, 4, 3, padding=1, rng=rng)
    assert all(p.dtype == np.float32 for p in conv.params.values())
    out = conv.forward(x)
    assert out.dtype == np.float32 and conv.backward(out).dtype == np.float32
    assert all(g.dtype == np.float32 for g in conv.grads.values())
    for pool in (MaxPool2d(2), AvgPool2d(2)):
        out = pool.forward(x)
        assert out.dtype == np.float32 and pool.backward(out).dtype == np.float32


def test_backward_params_fills_the_same_grads_without_dx():
    """The model's first layer skips dL/dx (backward_params), as autograd skips inputs."""
    rng = np.random.default_rng(0)
    conv = float64_conv(3, 4, 3, 2, 1, rng)
    x = rng.standard_normal((2, 3, 7, 7))
    G = rng.standard_normal(conv.forward(x).shape)
    conv.backward(G)
    full = dict(conv.grads)
    conv.forward(x)
    conv.grads = {}
    conv.backward_params(G)
    assert conv.grads.keys() == full.keys()
    for name in full:
        np.testing.assert_array_equal(conv.grads[name], full[name])


def test_he_init_has_std_sqrt_2_over_fan_in_and_a_seed_repeats_it():
    conv = Conv2d(16, 64, 5, rng=0)  # fan_in = 16 * 5 * 5 = 400; 25.6k weights: std within ~0.5%
    assert conv.params["W"].shape == (64, 16, 5, 5) and conv.params["b"].shape == (64,)
    assert conv.params["W"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.03)
    assert not conv.params["b"].any()
    np.testing.assert_array_equal(conv.params["W"], Conv2d(16, 64, 5, rng=0).params["W"])


def test_a_wrong_input_shape_is_an_error_that_names_it():
    with pytest.raises(TrainlabError, match=r"\(N, 3, H, W\), got shape \(2, 1, 8, 8\)"):
        Conv2d(3, 4, 3).forward(np.zeros((2, 1, 8, 8)))
    with pytest.raises(TrainlabError, match=r"5x5 window does not fit in an input of H, W = \(4, 4\)"):
        MaxPool2d(5).forward(np.zeros((1, 1, 4, 4)))


def copy_torch_weights(scratch, torch_model) -> None:
    """The torch model's weights into the scratch one, layer by layer in order: a conv's weight as it is,
    a linear layer's transposed (the lectures' x.dot(W), W of shape (fan_in, fan_out))."""
    theirs = [p.detach().numpy() for p in torch_model.parameters()]
    ours = [name for name in scratch.params]
    assert len(ours) == len(theirs)
    for name, value in zip(ours, theirs):
        value = value.T if value.ndim == 2 else value
        assert scratch.params[name].shape == value.shape, name
        scratch.params[name][...] = value  # in place: the model's params are its layers' own arrays


@pytest.mark.parametrize("act", ["tanh", "relu", {"name": "maxout", "k": 2}])
def test_lenet5_matches_trainlabs_torch_lenet5_with_the_same_weights(act):
    torch.manual_seed(0)
    reference = torch_lenet5(act=act).double()
    model = lenet5(act=act, dtype=np.float64)
    copy_torch_weights(model, reference)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)

    scores = reference(torch.tensor(X))
    loss_t = F.cross_entropy(scores, torch.tensor(y))
    loss_t.backward()
    assert_close(model.forward(X, train=False), scores.detach().numpy())
    loss, grads = model.gradients(X, y)
    assert loss == pytest.approx(loss_t.item(), rel=RTOL)
    assert grads.keys() == model.params.keys()
    for name, p in zip(model.params, reference.parameters()):
        expected = p.grad.numpy()
        assert_close(grads[name], expected.T if expected.ndim == 2 else expected)


def test_lenet5_has_the_papers_sizes_and_rejects_an_image_that_does_not_tile():
    model = lenet5()
    assert sum(p.size for p in model.params.values()) == 61_706  # 156 + 2416 + 48120 + 10164 + 850
    assert model.forward(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    assert lenet5(in_channels=3, num_classes=7, image_size=32).forward(np.zeros((1, 3, 32, 32))).shape == (
        1,
        7,
    )
    with pytest.raises(ConfigError, match="not a positive integer"):
        lenet5(image_size=29)
    with pytest.raises(ConfigError, match="not a positive integer"):
        torch_lenet5(image_size=29)


def test_importing_conv_does_not_import_torch():
    code = "import sys, trainlab.scratch.conv; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
