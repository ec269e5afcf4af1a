"""Diagnostics callbacks: statistics on constructed cases, bounded memory, gradient ratios, figures."""

import json

import pytest
import torch
from torch import nn

from tests.tolerance import EPS
from trainlab.data.loader import DeviceLoader
from trainlab.diagnose import ActivationStats, GradientStats, diagnostic_callbacks
from trainlab.diagnose.buffer import SampleBuffer
from trainlab.nn.activations import create_activation
from trainlab.training.trainer import Trainer


def record_forward(stats: ActivationStats, model: nn.Module, batches: int, x: torch.Tensor) -> None:
    for step in range(batches):
        stats.recording = True
        model(x)
        stats.commit(step)


def test_dead_units_are_found_on_a_constructed_layer():
    layer = nn.Linear(4, 8)
    with torch.no_grad():
        layer.bias[:3] = -100.0  # these three units never see a positive input
        layer.bias[3:] = 100.0
    model = nn.Sequential(layer, create_activation("relu"))
    stats = ActivationStats(dead_window=4).attach(model)
    record_forward(stats, model, 6, torch.randn(32, 4))
    assert stats.history()["dead"][-1, 0].item() == pytest.approx(3 / 8)


def test_saturation_and_near_zero_shares():
    model = nn.Sequential(nn.Identity(), create_activation("tanh"), create_activation("sigmoid"))
    stats = ActivationStats().attach(model)
    record_forward(stats, model, 1, 50 * torch.randn(256, 16))
    h = stats.history()
    assert h["kinds"] == ["tanh", "sigmoid"]
    assert h["saturated"][0, 0] > 0.95  # tanh of large inputs sits at +-1
    assert h["saturated"][0, 1] < 0.05  # its +-1 outputs are in sigmoid's linear range
    assert torch.isnan(h["dead"][0]).all()  # dead units only apply to the ReLU family


def test_histograms_cover_negative_values():
    model = nn.Sequential(create_activation("leaky_relu"))
    stats = ActivationStats().attach(model)
    record_forward(stats, model, 3, torch.randn(64, 32))
    hist = stats.histograms(bins=20)[0]
    assert hist["edges"][0] < 0 < hist["edges"][-1]
    assert hist["counts"].shape == (3, 20)


def test_sample_buffer_memory_is_bounded_and_spans_the_run():
    buffer = SampleBuffer(capacity=8, interval=1)
    for step in range(1000):
        if buffer.due(step):
            buffer.write(step, torch.full((5,), float(step)))
    steps, rows = buffer.read()
    assert rows.shape == (len(steps), 5) and len(steps) <= 8
    assert buffer.rows.shape == (8, 5)
    assert steps[0] == 0 and steps[-1] > 500
    assert torch.equal(rows[:, 0], torch.tensor(steps, dtype=torch.float32))


def small_trainer(callbacks, epochs=2, lr=0.1, momentum=0.0):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 3, (256,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), create_activation("relu"), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    trainer = Trainer(model, optimizer, epochs=epochs, callbacks=callbacks)
    trainer.fit(DeviceLoader(images, labels, 32, shuffle=True), DeviceLoader(images, labels, 128))
    return trainer


def test_update_ratio_matches_plain_sgd():
    grads = GradientStats(every=1, capacity=4)
    trainer = small_trainer([grads], epochs=1)
    h = grads.history()
    # plain SGD: ||W_after - W_before|| = lr ||g||, and ||W_before|| (the ratio's denominator) is within
    # that of ||W_after||: relative `expected`. Rounding: W_after - W_before loses 2 eps of ||W||
    # (relative 2 eps / expected), and each of the three float32 norms of n values is within
    # 10 sqrt(n) u of its sum of squares, half that of the norm (Higham & Mary 2019)
    expected = 0.1 * h["grad_norm"][-1] / h["weight_norm"][-1]
    n = torch.tensor([trainer.model[1].weight.numel(), trainer.model[3].weight.numel()])
    rtol = expected + 2 * EPS / expected + 3 * 10 * n**0.5 * EPS / 4
    assert ((h["update_ratio"][-1] - expected).abs() <= rtol * expected).all()
    assert h["params"] == ["1.weight", "3.weight"]
    assert trainer.global_step == 8


def test_diagnostic_callbacks_write_figures_and_json(tmp_path):
    small_trainer(diagnostic_callbacks(tmp_path, every=2, capacity=4), epochs=3)
    out = tmp_path / "diagnostics"
    for name in ("activations.png", "activation_histograms.png", "gradients.png", "gradient_flow.png"):
        assert (out / name).stat().st_size > 1000
    data = json.loads((out / "diagnostics.json").read_text())
    assert set(data) == {"activations", "gradients"}
    assert data["activations"]["0:2"]["saturated"] is None


def test_hooks_are_removed_after_training():
    stats = ActivationStats(every=1)
    trainer = small_trainer([stats], epochs=1)
    assert all(not m._forward_hooks for m in trainer.model.modules())
