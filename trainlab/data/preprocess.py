"""Data preprocessing, fitted on the training split only: zero-centring, scaling, PCA and whitening.

Inputs are uint8 images in [0, 255] or float images in [0, 1], shape (N, C, H, W), on any device. With
D = C * H * W features, mu the training mean image and Sigma = U diag(lambda) U^T their covariance:

    mode              output                                                  shape
    none              raw pixel values in [0, 255]                            (N, C, H, W)
    scale01           x / 255, in [0, 1]                                      (N, C, H, W)
    mean_image        x - mu                         (AlexNet)                (N, C, H, W)
    channel_mean      x - mu_c                       (VGG)                    (N, C, H, W)
    channel_mean_std  (x - mu_c) / sigma_c           (ResNet; the default)    (N, C, H, W)
    pca               (x - mu) U_k                   top-k components         (N, k)
    pca_whiten        (x - mu) U_k / sqrt(lambda_k + eps)                     (N, k)
    zca_whiten        (x - mu) U diag(1 / sqrt(lambda + eps lambda_1)) U^T    (N, C, H, W)

pca and pca_whiten reduce the dimension to k features, for a model that takes vectors (an MLP; see
`output_shape`); ZCA (Bell & Sejnowski 1997) rotates back, so its output is an image a CNN can take.
The lectures' advice for images: centre only.
The fitted statistics are tensors, so they go into the checkpoint and `predict` applies the same transform.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from trainlab.errors import ConfigError
from trainlab.registry import Registry, suggest

PREPROCESSING_MODES = Registry("preprocessing mode")

Stats = dict[str, torch.Tensor]


@PREPROCESSING_MODES.register("none", keeps_shape=True, summary="raw pixel values in [0, 255]")
def fit_none(x: torch.Tensor) -> Stats:
    return {"pixel_scale": torch.tensor(255.0)}


@PREPROCESSING_MODES.register("scale01", keeps_shape=True, summary="pixels / 255, in [0, 1]")
def fit_scale01(x: torch.Tensor) -> Stats:
    return {}


@PREPROCESSING_MODES.register("mean_image", keeps_shape=True, summary="subtract the mean image (AlexNet)")
def fit_mean_image(x: torch.Tensor) -> Stats:
    return {"mean": mean_image(x)}


@PREPROCESSING_MODES.register("channel_mean", keeps_shape=True, summary="subtract the per-channel mean (VGG)")
def fit_channel_mean(x: torch.Tensor) -> Stats:
    return {"mean": channel_mean_std(x)[0]}


@PREPROCESSING_MODES.register(
    "channel_mean_std", keeps_shape=True, summary="per-channel mean and std (ResNet; the default)"
)
def fit_channel_mean_std(x: torch.Tensor) -> Stats:
    mean, std = channel_mean_std(x)
    return {"mean": mean, "std": std}


@PREPROCESSING_MODES.register("pca", keeps_shape=False, summary="project on the top-k principal components")
def fit_pca(x: torch.Tensor, k: int | None = None, variance: float | None = None) -> Stats:
    """Keep `k` components, or as many as retain the fraction `variance` of the variance (default 0.99)."""
    mean = mean_image(x)
    eigenvalues, eigenvectors = feature_eigh(x, mean)
    k = num_components(eigenvalues, k, variance)
    return {"mean": mean, "components": eigenvectors[:, :k].float().contiguous()}


@PREPROCESSING_MODES.register(
    "pca_whiten", keeps_shape=False, summary="PCA, each component scaled to unit variance"
)
def fit_pca_whiten(
    x: torch.Tensor, k: int | None = None, variance: float | None = None, eps: float = 1e-5
) -> Stats:
    mean = mean_image(x)
    eigenvalues, eigenvectors = feature_eigh(x, mean)
    k = num_components(eigenvalues, k, variance)
    scale = (eigenvalues[:k] + eps).sqrt()
    return {"mean": mean, "components": eigenvectors[:, :k].float().contiguous(), "scale": scale.float()}


@PREPROCESSING_MODES.register(
    "zca_whiten", keeps_shape=True, summary="ZCA whitening: decorrelated pixels, as images"
)
def fit_zca_whiten(x: torch.Tensor, eps: float = 5e-4) -> Stats:
    """eps regularises the near-zero eigenvalues (Fashion-MNIST's border pixels: lambda ~ 1e-6) and is
    relative to the largest eigenvalue lambda_1: no direction is amplified more than 1 / sqrt(eps) times
    the top one, and the output does not depend on the pixel scale (x and 255 x whiten alike). The
    default 5e-4 is the absolute 1e-2 on Fashion-MNIST in [0, 1] (lambda_1 = 19.8); an absolute 1e-5, as
    in the lectures, would amplify the border pixels ~300x. pca_whiten's eps stays absolute: it only
    guards the division, since the k components it keeps have large eigenvalues."""
    if eps < 0:
        raise ConfigError(f"zca_whiten eps={eps} is not valid (expected >= 0)")
    mean = mean_image(x)
    eigenvalues, u = feature_eigh(x, mean)
    if eigenvalues[0] == 0:
        raise ConfigError("zca_whiten: the training images have zero variance (expected varying pixels)")
    s = (eigenvalues + eps * eigenvalues[0]).sqrt()
    return {"mean": mean, "whiten": ((u / s) @ u.T).float(), "unwhiten": ((u * s) @ u.T).float()}


MODES = tuple(PREPROCESSING_MODES.list())


class Standardizer:
    """`Standardizer(mode, **options).fit(train_images)`; then `transform(x)` and `inverse_transform(x)`."""

    def __init__(self, mode: str = "channel_mean_std", **options: Any):
        if mode not in PREPROCESSING_MODES:
            raise ConfigError(suggest(mode, PREPROCESSING_MODES.list(), "preprocessing mode"))
        self.mode, self.options = PREPROCESSING_MODES.canonical(mode), options
        accepted = list(inspect.signature(PREPROCESSING_MODES.get(self.mode)).parameters)[1:]
        for key in options:
            if key not in accepted:
                raise ConfigError(suggest(key, accepted, f"option for preprocessing mode {self.mode!r}:"))
        self.stats: Stats = {}

    @property
    def keeps_shape(self) -> bool:
        """True if transform returns (N, C, H, W) images; False for pca modes, which return (N, k)."""
        return PREPROCESSING_MODES.meta(self.mode)["keeps_shape"]

    def output_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one transformed example, for images of `image_shape` (C, H, W): the same, or (k,)
        for the pca modes once fitted, which is the input a model that takes vectors is built for."""
        return tuple(image_shape) if self.keeps_shape else (self.stats["components"].shape[1],)

    def fit(self, x: torch.Tensor) -> Standardizer:
        self.stats = PREPROCESSING_MODES.get(self.mode)(x, **self.options)
        self.stats = {k: v.to(x.device) for k, v in self.stats.items()}
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stats_on(x.device)
        x = as_float01(x)
        if "pixel_scale" in s:
            x = x * s["pixel_scale"]
        if "mean" in s:
            x = x - s["mean"]
        if "std" in s:
            x = x / s["std"]
        if "components" in s:
            y = x.flatten(1) @ s["components"]  # (N, k)
            return y / s["scale"] if "scale" in s else y
        if "whiten" in s:
            x = (x.flatten(1) @ s["whiten"]).view_as(x)  # whiten is symmetric
        return x

    __call__ = transform

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Back to the input's scale and (N, C, H, W) shape; pca modes give the rank-k reconstruction."""
        s = self.stats_on(x.device)
        if "components" in s:
            x = x * s["scale"] if "scale" in s else x
            x = (x @ s["components"].T).view(-1, *s["mean"].shape[1:])
        if "unwhiten" in s:
            x = (x.flatten(1) @ s["unwhiten"]).view_as(x)
        if "std" in s:
            x = x * s["std"]
        if "mean" in s:
            x = x + s["mean"]
        if "pixel_scale" in s:
            x = x / s["pixel_scale"]
        return x

    def stats_on(self, device: torch.device) -> Stats:
        if self.stats and next(iter(self.stats.values())).device != device:
            self.to(device)  # once, e.g. after load_state_dict on CPU for a CUDA batch
        return self.stats

    def to(self, device: torch.device | str) -> Standardizer:
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        return self

    def get_config(self) -> dict[str, Any]:
        return {"mode": self.mode, **self.options}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Standardizer:
        return cls(**config)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.stats)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats = dict(state)


def as_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def mean_image(x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """The mean image (1, C, H, W), summed in float64 chunks."""
    total = torch.zeros(x.shape[1:], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        total += as_float01(x[start : start + chunk]).double().sum(0)
    return (total / x.shape[0]).float().unsqueeze(0)


def feature_eigh(x: torch.Tensor, mean: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (D,), descending, and eigenvectors (D, D) as columns, of the covariance of the D = C*H*W
    features. Each chunk's X^T X runs in float32 (fast) and is summed in float64."""
    d = mean.numel()
    cov = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        centred = (as_float01(x[start : start + chunk]) - mean).flatten(1)  # (n, D)
        cov += (centred.T @ centred).double()
    eigenvalues, eigenvectors = eigh_one_thread(cov / x.shape[0])
    return eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)


def eigh_one_thread(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh, ascending. On CPU it runs on one thread: for 784 x 784, MKL's threaded solver took
    1.3-21 s on the 2-core CPU against 0.4-0.5 s on one thread (measured, torch 2.13)."""
    if matrix.device.type != "cpu":
        return torch.linalg.eigh(matrix)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


def num_components(eigenvalues: torch.Tensor, k: int | None, variance: float | None) -> int:
    """k itself, or the fewest components that retain `variance` of the total variance (default 0.99)."""
    if k is not None and variance is not None:
        raise ConfigError("pca takes k (components) or variance (retained fraction), not both")
    if k is not None:
        if not 1 <= k <= eigenvalues.numel():
            raise ConfigError(f"pca k={k} is not valid (expected 1 <= k <= {eigenvalues.numel()} features)")
        return int(k)
    variance = 0.99 if variance is None else variance
    if not 0 < variance <= 1:
        raise ConfigError(f"pca variance={variance} is not valid (expected a fraction in (0, 1])")
    retained = eigenvalues.cumsum(0) / eigenvalues.sum()
    return min(int((retained < variance - 1e-12).sum()) + 1, eigenvalues.numel())


def channel_mean_std(x: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, C, H, W) images, in float64 chunks; each of shape (1, C, 1, 1)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, x.shape[0], chunk):
        part = as_float01(x[start : start + chunk]).double()
        total += part.sum((0, 2, 3))
        total_sq += part.square().sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)


def channel_pca(images: torch.Tensor, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the per-pixel colour covariance (Krizhevsky et al. 2012, the AlexNet PCA lighting).

    Every pixel of every image is one C-vector; Sigma = Cov over all N*H*W pixels of (N, C, H, W) `images`
    (uint8 or float in [0, 1]). Returns eigenvalues (C,) in descending order and eigenvectors (C, C)
    whose *columns* are the matching unit eigenvectors, so AlexNet's colour shift per image is
    `eigenvectors @ (alpha * eigenvalues)` with alpha ~ N(0, 0.1^2).
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64, device=images.device)
    outer = torch.zeros(c, c, dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], chunk):
        pixels = as_float01(images[start : start + chunk]).double().transpose(0, 1).reshape(c, -1)  # (C, P)
        total += pixels.sum(1)
        outer += pixels @ pixels.T
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    return eigenvalues.flip(0).clamp_min(0).float(), eigenvectors.flip(1).float()
