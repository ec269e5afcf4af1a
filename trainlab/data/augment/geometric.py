"""Flips, crops and affine transforms, composed into one matrix per sample and resampled once.

Every op returns the *inverse* matrix of its transform, in pixel coordinates centred on the image
(x_c = x - (W - 1) / 2): it maps an output pixel to the source point it reads. A spec that applies
T_1 then T_2 ... T_n reads from T_1^-1 T_2^-1 ... T_n^-1 p, so the stage multiplies the inverses left to
right and samples once (bilinear, zeros outside the image). Centred pixel units keep rotations
undistorted on non-square images; grid_sample's normalised coordinates (align_corners=False) are
simply x_c * 2 / W.

When every op of the stage is a flip or an integer shift (hflip, vflip, pad_crop, integer translate),
the matrices are signed permutations plus integer offsets, and the stage is a pure gather: no
interpolation, any dtype (uint8 stays uint8). Flips alone are cheaper still: mirrored copies of the
chosen samples.

Crops keep the image size: random_resized_crop (Szegedy et al. 2015, "Going deeper with convolutions")
picks a box and stretches it over the whole image; scale_jitter is the ResNet recipe (He et al. 2016:
shorter side resized to a random L in [256, 480], random 224 crop), i.e. a zoom by L / 224 at a random
position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import trainlab.data.augment.base as base
from trainlab.data.augment.base import Op, Scratch, number, pixels, register, span, uniform
from trainlab.errors import ConfigError


def matrix(a, b, tx, c, d, ty) -> torch.Tensor:
    """(n, 3, 3) [[a, b, tx], [c, d, ty], [0, 0, 1]] from (n,) tensors or the numbers 0, 1 and -1."""
    ref = next(v for v in (a, b, tx, c, d, ty) if isinstance(v, torch.Tensor))
    one = ref.new_ones(()).expand_as(ref)
    const = {0: one * 0, 1: one, -1: -one}
    entries = [v if isinstance(v, torch.Tensor) else const[v] for v in (a, b, tx, c, d, ty, 0, 0, 1)]
    return torch.stack(entries, 1).view(-1, 3, 3)


def identity(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3)


def translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return matrix(1, 0, tx, 0, 1, ty)


def rotation(radians: torch.Tensor) -> torch.Tensor:
    """Inverse of a counter-clockwise rotation on screen (y points down), i.e. a rotation by -angle."""
    cos, sin = radians.cos(), radians.sin()
    return matrix(cos, -sin, 0, sin, cos, 0)


def shearing(shx: torch.Tensor, shy: torch.Tensor) -> torch.Tensor:
    """Inverse of the shear [[1, shx], [shy, 1]] (factors are tangents of the shear angles)."""
    inv_det = 1 / (1 - shx * shy)
    return matrix(inv_det, -shx * inv_det, 0, -shy * inv_det, inv_det, 0)


def keep_unchosen(m: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return torch.where(chosen.view(-1, 1, 1), m, identity(len(m), m.device))


def resample(x: torch.Tensor, inverse: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """Bilinear resampling of (B, C, H, W) float `x` through (B, 3, 3) centred inverse matrices."""
    b, _, h, w = x.shape
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2).view(1, 1, w, 1)
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2).view(1, h, 1, 1)
    scale = torch.tensor([[2 / w], [2 / h]], device=x.device)  # centred pixels -> grid_sample units
    cols = (inverse[:, :2, :] * scale).to(x.dtype).transpose(1, 2).reshape(b, 1, 1, 3, 2)  # (B, 1, 1, 3, 2)
    rows = torch.addcmul(cols[..., 2, :], cols[..., 1, :], ys)  # (B, H, 1, 2)
    grid = scratch.get("grid", (b, h, w, 2), x.dtype, x.device) if scratch else None
    grid = torch.add(rows, cols[..., 0, :] * xs, out=grid)  # (B, H, W, 2), written in grid_sample's layout
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def shift_copy(x: torch.Tensor, inverse: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """The copy-only path for flips and integer shifts: one gather from a 1-pixel zero border."""
    b, c, h, w = x.shape

    def source(axis: int, size: int) -> torch.Tensor:  # (B, size) index into the padded axis
        centred = torch.arange(size, device=x.device) - (size - 1) / 2
        src = (inverse[:, axis, axis, None] * centred + inverse[:, axis, 2, None] + (size - 1) / 2).round()
        return torch.where((src >= 0) & (src < size), src + 1, 0).long()

    rows, cols = source(1, h), source(0, w)
    index = (rows[:, :, None] * (w + 2) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    if scratch is None:
        padded = F.pad(x, (1, 1, 1, 1))
    else:  # the border of the reused buffer stays zero: only the inside is ever written
        padded = scratch.get("padded", (b, c, h + 2, w + 2), x.dtype, x.device, zeros=True)
        padded[:, :, 1:-1, 1:-1] = x
    return padded.view(b, c, -1).gather(2, index).view(b, c, h, w)


def flip_copy(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """The path for flips alone: each sample is copied as it is or mirrored, no per-pixel indices."""
    h, v = inverse[:, 0, 0] < 0, inverse[:, 1, 1] < 0  # (B,) mirrored left-right / top-bottom
    if base.avoid_host_sync(x):  # mirror everything, keep by mask
        x = torch.where(h.view(-1, 1, 1, 1), x.flip(3), x)
        return torch.where(v.view(-1, 1, 1, 1), x.flip(2), x)
    out = x.clone()
    for chosen, dims in ((h & ~v, (3,)), (v & ~h, (2,)), (h & v, (2, 3))):
        sel = chosen.nonzero().squeeze(1)
        if len(sel):
            out.index_copy_(0, sel, x.index_select(0, sel).flip(dims))
    return out


class Affine(Op):
    kind = "affine"
    integer = False  # True when the op only flips or shifts by whole pixels
    flip = False  # True when the op only flips

    def inverse(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 3, 3) centred inverse matrices, the identity for samples this op skips."""
        if self.p >= 1:
            return self.draw(n, height, width, generator)
        chosen = self.chosen(n, generator)
        return keep_unchosen(self.draw(n, height, width, generator), chosen)

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class AffineStage:
    """All affine ops of a spec, composed into one matrix per sample and applied in one pass."""

    def __init__(self, ops: list[Affine]):
        self.ops = ops
        self.integer = all(op.integer for op in ops)
        self.flips = all(op.flip for op in ops)
        self.scratch = Scratch()

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        inverse = self.ops[0].inverse(b, h, w, generator)
        for op in self.ops[1:]:
            inverse = inverse @ op.inverse(b, h, w, generator)
        if self.flips:
            return flip_copy(x, inverse)
        if self.integer:
            return shift_copy(x, inverse, self.scratch)
        return resample(x, inverse, self.scratch)


@register("hflip", aliases=("horizontal_flip", "flip"))
class HFlip(Affine):
    """Mirror left-right."""

    integer = flip = True

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def draw(self, n, height, width, generator):
        return matrix(torch.full((n,), -1.0, device=generator.device), 0, 0, 0, 1, 0)


@register("vflip", aliases=("vertical_flip",))
class VFlip(Affine):
    """Mirror top-bottom."""

    integer = flip = True

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def draw(self, n, height, width, generator):
        return matrix(torch.ones(n, device=generator.device), 0, 0, 0, -1, 0)


@register("translate", aliases=("translation", "shift"))
class Translate(Affine):
    """Shift by up to `pixels` in x and y (a fraction of the side if below 1). An int draws whole pixels."""

    primary = "pixels"

    def __init__(self, pixels: float = 2, p: float = 1.0):
        super().__init__(p)
        self.pixels = number(pixels, self.name, "pixels", 0)
        self.integer = isinstance(pixels, int)

    def draw(self, n, height, width, generator):
        sx, sy = pixels(self.pixels, width), pixels(self.pixels, height)
        if self.integer:
            tx = torch.randint(-int(sx), int(sx) + 1, (n,), generator=generator, device=generator.device)
            ty = torch.randint(-int(sy), int(sy) + 1, (n,), generator=generator, device=generator.device)
            return translation(-tx.float(), -ty.float())
        return translation(-uniform(generator, n, (-sx, sx)), -uniform(generator, n, (-sy, sy)))


@register("pad_crop", aliases=("random_crop", "crop"))
class PadCrop(Affine):
    """Zero-pad by `padding` pixels, then crop back to the original size at a random place."""

    primary = "padding"
    integer = True

    def __init__(self, padding: int = 4, p: float = 1.0):
        super().__init__(p)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"pad_crop: padding must be a whole number of pixels >= 0, got {padding!r}")
        self.padding = padding

    def draw(self, n, height, width, generator):
        t = torch.randint(
            -self.padding, self.padding + 1, (2, n), generator=generator, device=generator.device
        )
        return translation(t[0].float(), t[1].float())


@register("rotate", aliases=("rotation",))
class Rotate(Affine):
    """Rotate by an angle uniform in [-degrees, degrees] (or a lo:hi range), about the centre."""

    primary = "degrees"

    def __init__(self, degrees: float | tuple[float, float] = 10.0, p: float = 1.0):
        super().__init__(p)
        self.degrees = span(degrees, self.name, "degrees", low=-360, high=360)

    def draw(self, n, height, width, generator):
        return rotation(uniform(generator, n, self.degrees) * (math.pi / 180))


@register("shear")
class Shear(Affine):
    """Shear by angles uniform in [-x, x] along x and [-y, y] along y (degrees)."""

    primary = "x"

    def __init__(
        self, x: float | tuple[float, float] = 10.0, y: float | tuple[float, float] = 0.0, p: float = 1.0
    ):
        super().__init__(p)
        self.x = span(x, self.name, "x", low=-80, high=80)
        self.y = span(y, self.name, "y", low=-80, high=80)

    def draw(self, n, height, width, generator):
        shx = (uniform(generator, n, self.x) * (math.pi / 180)).tan()
        shy = (uniform(generator, n, self.y) * (math.pi / 180)).tan()
        return shearing(shx, shy)


@register("scale", aliases=("zoom",))
class Scale(Affine):
    """Zoom about the centre by a factor uniform in [1 - s, 1 + s] (or a lo:hi range)."""

    primary = "factor"

    def __init__(self, factor: float | tuple[float, float] = 0.1, p: float = 1.0):
        super().__init__(p)
        self.factor = span(factor, self.name, "factor", centre=1.0, low=1e-3)

    def draw(self, n, height, width, generator):
        inv = 1 / uniform(generator, n, self.factor)
        return matrix(inv, 0, 0, 0, inv, 0)


@register("stretch", aliases=("anisotropic_scale",))
class Stretch(Affine):
    """Scale x and y independently, each by a factor uniform in [1 - s, 1 + s] (or a lo:hi range)."""

    primary = "factor"

    def __init__(self, factor: float | tuple[float, float] = 0.1, p: float = 1.0):
        super().__init__(p)
        self.factor = span(factor, self.name, "factor", centre=1.0, low=1e-3)

    def draw(self, n, height, width, generator):
        ix, iy = 1 / uniform(generator, n, self.factor), 1 / uniform(generator, n, self.factor)
        return matrix(ix, 0, 0, 0, iy, 0)


@register("random_resized_crop", aliases=("rrc", "resized_crop"))
class RandomResizedCrop(Affine):
    """A box of area fraction in `scale` and aspect ratio (w/h) log-uniform in `ratio`, stretched over the
    image. Boxes larger than the image are clipped to it (torchvision retries ten times instead)."""

    primary = "scale"

    def __init__(
        self,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        p: float = 1.0,
    ):
        super().__init__(p)
        self.scale = span(scale, self.name, "scale", low=1e-4, high=1.0)
        self.ratio = span(ratio, self.name, "ratio", low=1e-3)

    def draw(self, n, height, width, generator):
        area = uniform(generator, n, self.scale)
        aspect = uniform(generator, n, (math.log(self.ratio[0]), math.log(self.ratio[1]))).exp()
        fw, fh = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)  # box / image
        cx = (torch.rand(n, generator=generator, device=generator.device) - 0.5) * (1 - fw) * width
        cy = (torch.rand(n, generator=generator, device=generator.device) - 0.5) * (1 - fh) * height
        return matrix(fw, 0, cx, 0, fh, cy)


@register("scale_jitter", aliases=("resnet_scale",))
class ScaleJitter(Affine):
    """Zoom in by a factor uniform in `zoom` and keep a random window of the original size. The default is
    the ResNet recipe as ratios: shorter side L in [256, 480], then a 224 crop, is a zoom by L / 224."""

    primary = "zoom"

    def __init__(self, zoom: tuple[float, float] = (256 / 224, 480 / 224), p: float = 1.0):
        super().__init__(p)
        self.zoom = span(zoom, self.name, "zoom", low=1.0)

    def draw(self, n, height, width, generator):
        inv = 1 / uniform(generator, n, self.zoom)
        cx = (torch.rand(n, generator=generator, device=generator.device) - 0.5) * (1 - inv) * width
        cy = (torch.rand(n, generator=generator, device=generator.device) - 0.5) * (1 - inv) * height
        return matrix(inv, 0, cx, 0, inv, cy)
