"""Standardizer modes on real Fashion-MNIST and generated data: statistics, whitening identity, inverses,
shapes, save / load, and channel_pca."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.tolerance import assert_float32_close
from trainlab.data.preprocess import MODES, PREPROCESSING_MODES, Standardizer, channel_pca, eigh_one_thread
from trainlab.errors import ConfigError


@pytest.fixture(scope="module")
def train_images(fashion_mnist) -> torch.Tensor:
    return fashion_mnist.train_images[:5000]  # (5000, 1, 28, 28) uint8


def correlated_images(n: int = 20000, seed: int = 0) -> torch.Tensor:
    """Float images (n, 3, 4, 4) in about [0, 1] with strongly correlated, full-rank pixels."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(48, 48, generator=g) + 2 * torch.eye(48)
    return (0.5 + 0.05 * torch.randn(n, 48, generator=g) @ mixing).view(n, 3, 4, 4)


def covariance(y: torch.Tensor) -> torch.Tensor:
    """Cov of (N, ...) samples, centred in float64 and multiplied in float32 (error ~1e-6, fast)."""
    y = y.flatten(1).double()
    y = (y - y.mean(0)).float()
    return (y.T @ y).double() / len(y)


@pytest.mark.parametrize("mode", ["zca_whiten", "pca_whiten"])
def test_whitened_training_data_has_identity_covariance(mode):
    x = correlated_images()
    y = Standardizer(mode, eps=0.0).fit(x).transform(x)
    assert y.shape == ((20000, 3, 4, 4) if mode == "zca_whiten" else (20000, y.shape[1]))
    torch.testing.assert_close(covariance(y), torch.eye(y[0].numel(), dtype=torch.float64), atol=1e-3, rtol=0)
    assert covariance(x).sub(torch.eye(48)).abs().max() > 0.1  # it was far from white before


def test_pca_whiten_on_real_images_is_white_in_the_top_components(train_images):
    std = Standardizer("pca_whiten", k=100).fit(train_images)
    y = std.transform(train_images)
    assert y.shape == (5000, 100)
    # each component is divided by sqrt(lambda + eps), eps = 1e-5: its variance is lambda / (lambda + eps)
    eigenvalues = eigh_one_thread(covariance(train_images.float().div(255)))[0].flip(0)[:100]
    white = torch.diag(eigenvalues / (eigenvalues + 1e-5))
    torch.testing.assert_close(covariance(y), white, atol=1e-3, rtol=0)


def test_zca_on_real_images_is_white_where_eps_is_negligible(train_images):
    """Cov(ZCA x) = U diag(lambda / (lambda + eps)) U^T: white on components with lambda >> eps."""
    std = Standardizer("zca_whiten", eps=1e-5).fit(train_images)
    y = std.transform(train_images)
    assert y.shape == train_images.shape
    x = train_images.float().div(255).flatten(1).double()
    eigenvalues, u = eigh_one_thread(covariance(x))
    eps = 1e-5 * eigenvalues.max()  # zca's eps is relative to the largest eigenvalue
    top = eigenvalues > 1e-2  # lambda / (lambda + eps) > 0.98, as the expected value says
    white = torch.diag(eigenvalues[top] / (eigenvalues[top] + eps))
    torch.testing.assert_close(u[:, top].T @ covariance(y) @ u[:, top], white, atol=1e-3, rtol=0)


def test_zca_eps_is_relative_so_the_output_does_not_depend_on_the_pixel_scale(train_images):
    """x and 256 x (a power of two: every float op rounds alike, scaled) whiten to the same images. With an
    absolute eps, 256 x would have 65536 times larger eigenvalues against the same eps, so less
    regularisation: Fashion-MNIST's border pixels (lambda ~ 1e-6) would come out far larger."""
    x = train_images[:2000].float() / 255  # float input is taken as it is, so 256 x is a brighter pixel scale
    fitted = Standardizer("zca_whiten").fit(x)
    y, y256 = fitted.transform(x[:64]), Standardizer("zca_whiten").fit(256 * x).transform(256 * x[:64])
    # The whitening matrices agree to a float64 eigensolver's error, then one float32 rounding each (eps
    # |W_ij|); the (64, 784) x (784, 784) product then rounds each sum of D terms differently: within
    # 10 sqrt(D) u sum_i |x_i W_ij| each (Higham & Mary 2019, tests/tolerance.py)
    terms = (x[:64] - fitted.stats["mean"]).flatten(1).abs() @ fitted.stats["whiten"].abs()  # (64, D)
    assert_float32_close(y256.flatten(1), y.flatten(1), ops=1 + 10 * 784**0.5, scale=terms)


def test_pca_keeps_k_components_or_the_retained_variance(train_images):
    assert Standardizer("pca", k=30).fit(train_images).transform(train_images[:5]).shape == (5, 30)
    std = Standardizer("pca", variance=0.9).fit(train_images)
    k = std.stats["components"].shape[1]
    x = train_images.float().div(255)
    total = covariance(x).trace()
    retained = covariance(std.transform(train_images)).trace() / total
    assert retained >= 0.9 and 10 < k < 200
    fewer = std.transform(train_images)[:, : k - 1]
    assert covariance(fewer).trace() / total < 0.9  # k is the fewest that retain 90%


def test_centring_modes_statistics(train_images):
    # The statistics are fitted in float64 and stored in float32 (one rounding each); y = (x - mean) / std
    # takes one float32 rounding per op. The test's own statistics are float64 sums, so y's mean is 0
    # to within those roundings of mean |y| + |mean / std|, and its (population) std 1 or std(x).
    x = train_images.float().div(255)
    fitted = Standardizer("channel_mean_std").fit(train_images)
    y, offset = fitted.transform(x).double(), (fitted.stats["mean"] / fitted.stats["std"]).abs().max()
    assert_float32_close(y.mean(), 0, ops=2, scale=y.abs().mean() + offset)
    assert_float32_close(y.std(correction=0), 1, ops=2, scale=1.0)
    fitted = Standardizer("mean_image").fit(train_images)
    y = fitted.transform(train_images).double()
    assert_float32_close(y.mean(0), 0, ops=1, scale=y.abs().mean(0) + fitted.stats["mean"][0].abs())
    fitted = Standardizer("channel_mean").fit(train_images)
    y = fitted.transform(train_images).double()
    assert_float32_close(y.mean(), 0, ops=1, scale=y.abs().mean() + fitted.stats["mean"].abs().max())
    assert_float32_close(y.std(), x.double().std(), ops=1, scale=y.square().mean().sqrt())
    assert Standardizer("none").fit(train_images).transform(x).max().item() == 255
    assert Standardizer("scale01").fit(train_images).transform(train_images).max().item() == 1


@pytest.mark.parametrize("mode", MODES)
def test_inverse_transform_and_save_load_round_trip(mode, train_images, tmp_path):
    images = train_images[:2064, :, ::2, ::2]  # (2064, 1, 14, 14): 196 features keep the fits quick
    options = {"k": 196} if mode in ("pca", "pca_whiten") else {}  # all components: an exact inverse
    fitted = Standardizer(mode, **options).fit(images[:2000])
    batch = images[2000:]
    y = fitted.transform(batch)
    assert (y.dim() == 4) == fitted.keeps_shape
    torch.testing.assert_close(fitted.inverse_transform(y), batch.float() / 255, atol=2e-4, rtol=0)
    save_file(fitted.state_dict(), tmp_path / "preprocess.safetensors")  # as the checkpoint stores it
    restored = Standardizer.from_config(fitted.get_config())
    restored.load_state_dict(load_file(tmp_path / "preprocess.safetensors"))
    assert torch.equal(restored.transform(batch), y)


def test_uint8_and_float_inputs_agree():
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    std = Standardizer("zca_whiten").fit(x)
    torch.testing.assert_close(std(x), std(x.float() / 255))


def test_bad_modes_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'zca_whiten'"):
        Standardizer("zca_whitten")
    with pytest.raises(ConfigError, match="did you mean 'eps'"):
        Standardizer("zca_whiten", esp=0.1)
    with pytest.raises(ConfigError, match="not both"):
        Standardizer("pca", k=3, variance=0.9).fit(correlated_images(100))
    with pytest.raises(ConfigError, match="k=0"):
        Standardizer("pca", k=0).fit(correlated_images(100))
    with pytest.raises(ConfigError, match="zero variance"):  # eps relative to lambda_1 = 0: no regulariser
        Standardizer("zca_whiten").fit(torch.full((10, 1, 4, 4), 7, dtype=torch.uint8))
    assert set(MODES) == set(PREPROCESSING_MODES.list())


def test_channel_pca_eigenpairs_of_pixel_colour_covariance():
    x = correlated_images(2000)
    eigenvalues, eigenvectors = channel_pca(x)
    pixels = x.transpose(0, 1).reshape(3, -1).double()
    cov = torch.cov(pixels, correction=0)
    assert (eigenvalues[:-1] >= eigenvalues[1:]).all()
    # float64 eigenpairs stored in float32 (one rounding each), multiplied back in float32 (3 terms and
    # 2 products a term): 6 roundings of |V| diag(lambda) |V|^T; V^T V: 4 roundings of sums |v_i v_j| <= 1
    reconstructed = eigenvectors @ torch.diag(eigenvalues) @ eigenvectors.T
    terms = eigenvectors.abs() @ torch.diag(eigenvalues.abs()) @ eigenvectors.abs().T
    assert_float32_close(reconstructed, cov, ops=6, scale=terms)
    assert_float32_close(eigenvectors.T @ eigenvectors, torch.eye(3), ops=4, scale=1.0)
