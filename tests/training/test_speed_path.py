"""What the speed recipes rely on, checked on the CPU: no host-device sync per step, a compile
warm-up that changes nothing, the timing phases of the speed goals, and sparse resume checkpoints."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from tests.tolerance import assert_float32_close
from trainlab.config import load_config
from trainlab.data.augment import Augment
from trainlab.data.loader import DeviceLoader
from trainlab.models import create_model
from trainlab.run import train
from trainlab.tasks import create_task
from trainlab.training.callbacks import Callback, Checkpointer, ProgressBar
from trainlab.training.trainer import Trainer

SYNCING = ("item", "tolist", "nonzero", "__bool__", "__float__", "__int__", "__index__")


def small_trainer(steps: int, **options) -> tuple[Trainer, DeviceLoader]:
    torch.manual_seed(0)
    model = create_model("speednet", widths=[8, 8, 8])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (steps * 16, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (steps * 16,), generator=g)
    loader = DeviceLoader(images, labels, 16, shuffle=True, drop_last=True)
    return Trainer(model, optimizer, epochs=1, device="cpu", **options), loader


def syncs_in_one_epoch(monkeypatch, force_accelerator_path, steps: int) -> int:
    """Calls of tensor methods that make the host wait for the device, in one epoch of `steps` steps
    with the accelerator path of the augmentation, EMA, label smoothing and a progress bar."""
    force_accelerator_path()
    augment = Augment("hflip,translate=2,random_erasing,mixup=0.2", seed=0, num_classes=10)
    trainer, loader = small_trainer(
        steps,
        augment=augment,
        ema_decay=0.9,
        task=create_task("classification", label_smoothing=0.1),
        callbacks=[ProgressBar(False)],
    )
    count = [0]
    with monkeypatch.context() as patch:
        for name in SYNCING:
            method = getattr(torch.Tensor, name)

            def counted(self, *args, _method=method, **kwargs):
                count[0] += 1
                return _method(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, counted)
        trainer.fit(loader)
    return count[0]


def test_no_host_sync_per_training_step(monkeypatch, force_accelerator_path):
    few = syncs_in_one_epoch(monkeypatch, force_accelerator_path, 3)
    many = syncs_in_one_epoch(monkeypatch, force_accelerator_path, 9)
    assert few > 0  # the epoch's one read of the loss and accuracy buffers is seen
    assert many == few, f"{many - few} more host syncs for 6 more steps"


def test_warm_up_runs_the_model_and_leaves_the_run_exactly_as_without(monkeypatch):
    runs = []
    for warm in (False, True):
        trainer, loader = small_trainer(4, ema_decay=0.9)
        forwards = []
        trainer.model.register_forward_hook(lambda m, i, o, f=forwards: f.append(1))
        if warm:
            trainer.warm_up(loader.images[:16], loader.targets[:16])
            assert len(forwards) == 2 and trainer.model.groups[0][2].num_batches_tracked == 0
        torch.manual_seed(1)  # dropout-free model, but the global RNG must also be where it was
        trainer.fit(loader)
        runs.append((trainer.model.state_dict(), torch.rand(3)))
    (plain, plain_rng), (warmed, warmed_rng) = runs
    assert all(torch.equal(plain[k], warmed[k]) for k in plain)
    assert torch.equal(plain_rng, warmed_rng)


SMALL = {
    "train.device": "cpu", "data.limit_train": 512, "data.val_size": 0, "train.epochs": 2,
    "data.batch_size": 64, "model.widths": [8, 8, 8], "train.precision": "fp32", "train.channels_last": False,
}  # fmt: skip


def test_compiled_run_compiles_only_in_the_warm_up(monkeypatch, tmp_path):
    """torch.compile (with the cheap aot_eager backend, so the test needs no C compiler): every graph
    is built before the timed epochs start, and the timing phases add up."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    graphs = {}

    class CountGraphs(Callback):
        def on_train_begin(self, trainer):
            graphs["begin"] = counters["stats"]["unique_graphs"]

        def on_train_end(self, trainer, logs):
            graphs["end"] = counters["stats"]["unique_graphs"]

    cfg = load_config("speedrun", {**SMALL, "train.compile": True})
    s = train(cfg, tmp_path / "run", callbacks=[CountGraphs()], progress=False).summary
    assert graphs["begin"] >= 1 and graphs["end"] == graphs["begin"]
    assert s["compile_seconds"] > 0
    parts = s["init_seconds"] + s["train_seconds"] + s["eval_seconds"]
    assert parts <= s["time_to_result_seconds"] + 1e-6
    assert s["time_to_result_seconds"] + s["load_seconds"] + s["compile_seconds"] <= s["total_seconds"]


def test_uncompiled_run_reports_no_compile_time():
    s = train(load_config("speedrun", {**SMALL, "train.compile": False}), progress=False).summary
    assert s["compile_seconds"] == 0.0 and s["time_to_result_seconds"] > s["train_seconds"] > 0


@pytest.mark.parametrize(("every", "saved_after"), [(1, [1, 2, 3]), (2, [2, 3]), (0, [3])])
def test_checkpoint_every(every, saved_after, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(Checkpointer, "save", lambda self, trainer, name: saved.append(trainer.epoch))
    trainer, loader = small_trainer(2, callbacks=[Checkpointer(tmp_path, every=every)])
    trainer.epochs = 3
    trainer.fit(loader)
    assert saved == saved_after


def test_checkpoint_every_rejects_negative(tmp_path):
    from trainlab.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint_every"):
        Checkpointer(tmp_path, every=-1)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_fused_optimizer_of_the_cuda_path_takes_the_default_steps(name, monkeypatch):
    """On CUDA the optimisers use PyTorch's fused kernels; forced on here (CPU kernels exist), every
    option the recipes use must be accepted and give the same steps. Both get the same gradients: a
    rounding difference in the weights would change the next gradients and grow through the network
    (max-pooling, batch norm), by an amount that no float32 bound can tell from a wrong step."""
    from trainlab.config import OptimConfig
    from trainlab.training import optim

    cfg = OptimConfig(name=name, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert not optim.fused(optim.param_groups(create_model("mlp"), 0.0, 0.1))  # CPU parameters: not fused
    torch.manual_seed(0)
    model = create_model("speednet", widths=[4, 4, 4])
    models, optimizers = (model, copy.deepcopy(model)), []
    for m, use_fused in zip(models, (False, True)):
        monkeypatch.setattr(optim, "fused", lambda groups, f=use_fused: f)
        optimizers.append(optim.create_optimizer(m, cfg))
        assert bool(optimizers[-1].defaults.get("fused")) == use_fused
    # A step is w - lr * d, with d from the gradient and the optimiser's state in about 10 rounded ops
    # per element (AdamW: decay, two moments, two bias corrections, sqrt, + eps, divide, scale,
    # subtract), each within eps / 2 of its magnitude: the two kernels differ by at most 10 eps of
    # |w| + lr * (the magnitudes inside d) per step, and the differences add up over the steps. Adam's
    # |m_hat| <= sqrt(v_hat) (Cauchy-Schwarz) keeps those magnitudes within about 1; SGD's momentum
    # buffer is at most the sum of |g| so far, and Nesterov's d = g + momentum * buffer within twice it.
    params = [list(m.parameters()) for m in models]
    grad_sums = [torch.zeros_like(p) for p in params[0]]
    scales = [torch.zeros_like(p) for p in params[0]]
    for _ in range(3):
        model(torch.randn(8, 1, 28, 28)).square().mean().backward()
        for p, q, grad_sum, scale in zip(*params, grad_sums, scales):
            q.grad = p.grad.clone()
            grad_sum += p.grad.abs()
            scale += p.detach().abs() + cfg.lr * (1 + 2 * grad_sum)
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
    for p, q, scale in zip(*params, scales):
        assert_float32_close(q.detach(), p.detach(), ops=10, scale=scale)
