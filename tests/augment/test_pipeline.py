"""Augment as a whole: determinism, resume from state_dict, dtypes, devices, the preview grid."""

import pytest
import torch
from PIL import Image

from trainlab.data.augment import Augment
from trainlab.data.augment.preview import preview_command
from trainlab.errors import ConfigError, TrainlabError

TYPICAL = "hflip,pad_crop=4,color_jitter=0.4,rotate=10,shear=10,cutout=8,mixup=0.2"


def batches(n=3, b=16):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.rand(b, 3, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)
    ]


def test_same_seed_same_stream_and_different_seed_differs():
    a, b, c = (Augment(TYPICAL, seed=s, num_classes=10) for s in (0, 0, 1))
    for x, y in batches():
        xa, ta = a(x, y)
        xb, tb = b(x, y)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)
        assert not torch.equal(xa, c(x, y)[0])


def test_resume_from_state_dict_continues_the_stream():
    data = batches(4)
    straight = Augment(TYPICAL, seed=5, num_classes=10)
    expected = [straight(x, y) for x, y in data]
    first = Augment(TYPICAL, seed=5, num_classes=10)
    for x, y in data[:2]:
        first(x, y)
    state = {k: v.clone() for k, v in first.state_dict().items()}
    resumed = Augment(TYPICAL, seed=123, num_classes=10)  # the seed is overridden by the state
    resumed.load_state_dict(state)
    for (x, y), (ex, et) in zip(data[2:], expected[2:]):
        out, t = resumed(x, y)
        assert torch.equal(out, ex) and torch.equal(t, et)


def test_state_dict_is_tensors():
    state = Augment("hflip").state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_uint8_round_trip_and_float64():
    x = (torch.rand(8, 3, 16, 16) * 255).to(torch.uint8)
    out, _ = Augment("rotate=10,color_jitter=0.2")(x, torch.zeros(8))
    assert out.dtype == torch.uint8
    out, _ = Augment("rotate=10,color_jitter=0.2")(x.double() / 255, torch.zeros(8))
    assert out.dtype == torch.float64


def test_copy_only_stage_keeps_uint8_values():
    x = (torch.rand(8, 3, 16, 16) * 255).to(torch.uint8)
    out, _ = Augment("hflip,vflip,pad_crop=2,translate=1")(x, torch.zeros(8))
    assert out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0}


@pytest.mark.parametrize(
    "spec", ["color_jitter=0.4,rotate=10", "hflip,pad_crop=2", "rotate=10", "color_jitter=0.4", TYPICAL]
)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_reused_buffers_never_reach_the_caller(spec, dtype):
    x = torch.rand(8, 3, 16, 16)
    x = (x * 255).to(torch.uint8) if dtype == torch.uint8 else x
    aug = Augment(spec, num_classes=10)
    first, _ = aug(x, torch.zeros(8, dtype=torch.long))
    kept = first.clone()
    second, _ = aug(x, torch.zeros(8, dtype=torch.long))
    assert torch.equal(first, kept) and first.data_ptr() != second.data_ptr()


def test_bad_inputs():
    with pytest.raises(TrainlabError, match="B, C, H, W"):
        Augment("hflip")(torch.rand(3, 16, 16), torch.zeros(3))
    with pytest.raises(ConfigError, match="device"):
        Augment("hflip")(torch.rand(2, 3, 8, 8, device="meta"), torch.zeros(2))


def test_empty_spec_returns_inputs():
    x, y = batches(1)[0]
    out, t = Augment("")(x, y)
    assert out is x and t is y


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_shapes_and_stays_on_device():
    x, y = batches(1)[0]
    aug = Augment(TYPICAL + ",randaugment,random_erasing", num_classes=10, device="cuda")
    out, t = aug(x.cuda(), y.cuda())
    assert out.is_cuda and t.is_cuda and out.shape == x.shape


def test_preview_from_an_image_file(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((torch.rand(20, 24, 3) * 255).byte().numpy()).save(src)
    out = tmp_path / "grid.png"
    message = preview_command(None, str(src), "hflip,rotate=20,color_jitter=0.4", str(out), n_aug=3)
    assert out.exists() and "\n" not in message and str(out) in message
    with Image.open(out) as im:
        assert im.size[0] > 4 * 24 and im.size[1] > 20  # 1 + 3 tiles in a row, enlarged
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_preview_needs_a_source(tmp_path):
    with pytest.raises(ConfigError, match="--dataset"):
        preview_command(None, None, "hflip", str(tmp_path / "g.png"))
