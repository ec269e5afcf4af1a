"""The invariants of issue 7: flips, integer shifts, rotation by 0, mixing targets."""

import torch

from tests.tolerance import EPS, assert_float32_close
from trainlab.data.augment import Augment
from trainlab.data.augment.geometric import resample, rotation, translation
from trainlab.data.augment.photometric import RGB_TO_YIQ, YIQ_TO_RGB


def images(n=8, c=3, h=12, w=16, dtype=torch.float32):
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))
    return (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x


def assert_resampled_close(actual, expected, size):
    """Bilinear resampling of values in [0, 1]: the sampling position takes about 5 float32 ops on
    coordinates up to the image size, so it is within ~4 * size eps pixels of exact and moves the value by
    at most that much; the 4-tap interpolation adds 4 eps."""
    assert_float32_close(actual, expected, ops=4 * size + 4, scale=1.0)


def test_hflip_twice_is_identity():
    x = images(dtype=torch.uint8)
    flip = Augment("hflip=1")
    once, _ = flip(x, torch.zeros(8))
    twice, _ = flip(once, torch.zeros(8))
    assert torch.equal(once, x.flip(3)) and torch.equal(twice, x)


def test_vflip_is_a_flip_of_rows():
    x = images()
    out, _ = Augment("vflip=1")(x, torch.zeros(8))
    assert torch.equal(out, x.flip(2))


def test_integer_translate_moves_content_exactly():
    x = images(n=64, dtype=torch.uint8)
    aug = Augment("translate=3")
    out, _ = aug(x, torch.zeros(64))
    assert aug.stages[0].integer  # the copy-only path
    for i in range(64):  # find each sample's shift and check every pixel, zeros where content left
        found = False
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy) : 12 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
                shifted[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = (
                    src
                )
                found |= torch.equal(out[i], shifted)
        assert found, f"sample {i} is not an exact integer shift"


def test_pad_crop_matches_pad_then_crop():
    x = images(n=32, dtype=torch.uint8)
    out, _ = Augment("pad_crop=2")(x, torch.zeros(32))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    crops = padded.unfold(2, 12, 1).unfold(3, 16, 1)  # (N, C, 5, 5, 12, 16): every crop
    for i in range(32):
        assert any(torch.equal(out[i], crops[i, :, a, b]) for a in range(5) for b in range(5))


def test_float_translate_by_whole_pixels_matches_copy():
    x = images()
    shift = torch.tensor([2.0, -1.0, 0.0, 3.0, 1.0, -2.0, 0.0, 1.0])
    out = resample(x, translation(-shift, torch.zeros(8)))  # inverse map: read from x - shift
    for i, s in enumerate(shift.long().tolist()):
        expected = torch.zeros_like(x[i])
        if s >= 0:
            expected[:, :, s:] = x[i][:, :, : 16 - s]
        else:
            expected[:, :, :s] = x[i][:, :, -s:]
        assert_resampled_close(out[i], expected, size=16)


def test_rotate_by_zero_is_identity():
    x = images()
    assert_resampled_close(resample(x, rotation(torch.zeros(8))), x, size=16)
    out, _ = Augment("rotate(degrees=0:0)")(images(dtype=torch.uint8), torch.zeros(8))
    assert torch.equal(out, images(dtype=torch.uint8))


def test_rotate_by_90_turns_a_square_image():
    x = images(h=16, w=16)
    out = resample(x, rotation(torch.full((8,), torch.pi / 2)))
    assert_resampled_close(out, x.rot90(1, (2, 3)), size=16)  # counter-clockwise on screen


def test_affine_ops_compose_into_one_pass():
    aug = Augment("hflip,pad_crop=4,color_jitter=0.4,rotate=10,shear=10")
    kinds = [type(s).__name__ for s in aug.stages]
    assert kinds == ["ColorStage", "AffineStage"]  # colour first: the border stays black


def test_mixup_targets_sum_to_one_and_mix_images():
    x, y = images(n=64), torch.arange(64) % 10
    out, t = Augment("mixup=0.4", num_classes=10)(x, y)
    assert t.shape == (64, 10) and torch.allclose(t.sum(1), torch.ones(64))
    lam = t[torch.arange(64), y]  # the weight of each sample's own label (when partner differs)
    assert ((lam > 0) & (lam <= 1)).all()


def test_cutmix_label_mass_equals_area_ratio():
    x = torch.zeros(64, 1, 20, 20)
    x[32:] = 1.0  # partners from the other half show up as ones
    y = torch.cat((torch.zeros(32), torch.ones(32))).long()
    out, t = Augment("cutmix=1.0", num_classes=2)(x, y)
    pasted = out.mean((1, 2, 3))  # fraction of the image that came from a class-1 image
    from_one = torch.where(y == 0, pasted, 1 - out.mean((1, 2, 3)))
    expected_other = torch.where(y == 0, t[:, 1], t[:, 0])
    same_class = (y == 0) & (pasted == 0) | (y == 1) & (pasted == 1)
    differs = ~same_class
    # a mean of 400 zeros and ones (exact sum, one division) against the area ratio (a few ops): <= 1
    assert_float32_close(from_one[differs], expected_other[differs], ops=8, scale=1.0)
    assert differs.sum() > 10


def test_soft_targets_compose_with_label_smoothing():
    logits = torch.randn(16, 10)
    x, y = images(n=16), torch.arange(16) % 10
    _, t = Augment("mixup=0.2,cutmix=1.0", num_classes=10)(x, y)
    loss = torch.nn.functional.cross_entropy(logits, t, label_smoothing=0.1)
    assert torch.isfinite(loss)


def test_pca_lighting_with_dataset_eigenpairs_shifts_along_them():
    """b = V (alpha * lambda): the same per-pixel shift everywhere in an image, and, with the same seed
    (the same alpha), eigenvalues four times larger give coordinates in the eigenbasis four times larger."""
    from trainlab.data.preprocess import channel_pca

    x = images(n=16) * 0.5 + 0.25  # in [0.25, 0.75]: the shifts (|b| < 0.1 here) are never clipped
    values, vectors = channel_pca(images(n=16))

    def shift(eigenvalues):
        aug = Augment(
            {"pca_lighting": {"std": 0.1, "eigenvalues": eigenvalues, "eigenvectors": vectors}}, seed=3
        )
        return aug(x, torch.zeros(16))[0] - x  # (16, 3, H, W)

    b = shift(values)
    per_image = b[:, :, :1, :1]
    assert_float32_close(b, per_image.expand_as(b), ops=4, scale=1.0)  # one colour shift per image
    coords, coords4 = (s[:, :, 0, 0] @ vectors for s in (b, shift(4 * values)))  # alpha * lambda
    assert coords.abs().max() > 100 * EPS  # a real shift, not rounding
    assert_float32_close(coords4, 4 * coords, ops=8, scale=4.0)


def test_color_jitter_on_grey_images_keeps_them_grey():
    x = images(c=1).expand(8, 3, 12, 16).contiguous()
    out, _ = Augment("color_jitter=0.4")(x, torch.zeros(8))
    # Grey stays grey when the rows of the composed colour map have equal sums; in float32 they differ
    # by the rounding of its 3x3 products (hue: 2, composition: 3, applying it: 1; 3 terms each, 18
    # ops), relative to the products of the absolute values: the YIQ matrices, a rotation block with
    # |cos| + |sin| <= 2, and brightness, contrast and saturation factors <= 1.4 each; grey values <= 1
    rotation_bound = torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 1, 1]])
    scale = (YIQ_TO_RGB.abs() @ rotation_bound @ RGB_TO_YIQ.abs()).sum(1).max() * 1.4**3
    assert_float32_close(out[:, 0], out[:, 1], ops=18, scale=scale)
    assert_float32_close(out[:, 1], out[:, 2], ops=18, scale=scale)


def test_flips_alone_give_one_of_the_four_mirror_images():
    x = images(n=32, dtype=torch.uint8)
    aug = Augment("hflip,vflip")
    out, _ = aug(x, torch.zeros(32))
    assert aug.stages[0].flips
    seen = set()
    for i in range(32):
        options = [x[i], x[i].flip(2), x[i].flip(1), x[i].flip(1, 2)]  # per-image dims: (C, H, W)
        match = [k for k, o in enumerate(options) if torch.equal(out[i], o)]
        assert match, f"sample {i} is not a mirror image"
        seen.add(match[0])
    assert seen == {0, 1, 2, 3}


def test_sharpness_matches_pils_kernel_as_a_convolution():
    from trainlab.data.augment.tone import sharpness

    x, factor = images(), torch.linspace(0, 2, 8)
    kernel = torch.ones(3, 1, 3, 3)
    kernel[:, :, 1, 1] = 5
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = torch.nn.functional.conv2d(x, kernel / 13, groups=3)
    expected = torch.lerp(smooth, x, factor.view(-1, 1, 1, 1)).clamp(0, 1)
    # the 3x3 sum two ways (shifted adds vs a convolution: <= 12 roundings each of partial sums <= 1 after
    # the / 13), then the lerp (3 roundings of terms <= 3 for factors <= 2): 21 eps of values <= 1
    assert_float32_close(sharpness(x, factor), expected, ops=21, scale=1.0)


def test_elastic_smoothing_equals_a_zero_padded_gaussian_convolution():
    from trainlab.data.augment.distort import gaussian_smooth

    field = torch.rand(2, 2, 20, 24) * 2 - 1
    t = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / 2.0) ** 2)
    k = k / k.sum()
    f = field.reshape(4, 1, 20, 24)
    f = torch.nn.functional.conv2d(f, k.view(1, 1, -1, 1), padding=(6, 0))
    f = torch.nn.functional.conv2d(f, k.view(1, 1, 1, -1), padding=(0, 6))
    # two passes of a 13-tap kernel summing to 1 on values in [-1, 1], as matrix products and as
    # convolutions (13 roundings a pass, 2 more for the kernel weights): 2 * (13 + 2) eps
    assert_float32_close(gaussian_smooth(field, 2.0), f.view(2, 2, 20, 24), ops=30, scale=1.0)
