"""The parts of distributed training that need no second process: the shard arithmetic, the launcher's
command and failure line, SyncBatchNorm conversion, and what is refused before any process starts."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest
import torch

from trainlab.cli import main
from trainlab.data.shard import batch_block, batch_rows
from trainlab.errors import ConfigError
from trainlab.launch import EXIT_LOST_PEER, failures_in_order, how_it_ended, worker_command
from trainlab.models import create_model
from trainlab.training.distributed import Ranks, check_sync_bn, convert_sync_batchnorm, rank_seed


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("n", [0, 1, 5, 10, 256, 10_001])
def test_rows_and_blocks_partition_in_order(n, world):
    rows = [list(range(n)[batch_rows(n, r, world)]) for r in range(world)]
    blocks = [list(batch_block(n, r, world)) for r in range(world)]
    for parts in (rows, blocks):
        assert [i for part in parts for i in part] == list(range(n))  # contiguous, in rank order, once each
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_worker_command_fixes_the_run_directory_and_drops_nproc():
    argv = ["train", "--nproc", "2", "--epochs", "1", "--nproc=2"]
    assert worker_command(argv, "runs/x", resume=False) == [
        "-m",
        "trainlab",
        "train",
        "--epochs",
        "1",
        "--out",
        "runs/x",
    ]
    assert worker_command(["train", "--out", "r", "--nproc", "2"], "ignored", resume=False)[-2:] == [
        "--out",
        "r",
    ]
    assert "--out" not in worker_command(["train", "--resume", "r", "--nproc", "2"], "r", resume=True)


def test_the_failure_line_names_the_cause_first():
    def failure(code, when):
        return SimpleNamespace(exitcode=code, timestamp=when)

    stopped, killed, lost, own = -signal.SIGTERM, -signal.SIGKILL, EXIT_LOST_PEER, 1
    order = failures_in_order({0: failure(stopped, 5), 1: failure(killed, 6), 2: failure(lost, 4)})
    assert order == [(1, killed), (2, lost), (0, stopped)]
    assert failures_in_order({0: failure(lost, 1), 3: failure(own, 2)})[0] == (3, own)
    # gloo aborts a rank whose peer's connection closed (SIGABRT), often before the failed rank exits
    aborted = -signal.SIGABRT
    assert failures_in_order({0: failure(own, 2), 1: failure(aborted, 1)}) == [(0, own), (1, aborted)]
    assert failures_in_order({0: failure(aborted, 1), 1: failure(killed, 2)})[0] == (1, killed)
    assert how_it_ended(killed) == "killed by SIGKILL" and how_it_ended(2) == "exit code 2"
    assert how_it_ended(stopped) == "stopped by torchrun"


def test_a_global_batch_that_does_not_divide_is_refused_before_launching(capsys):
    assert main(["train", "--batch-size", "10", "--nproc", "3", "--epochs", "1", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.batch_size=10" in err and "multiple of 3" in err


def test_sync_bn_keeps_the_tensors_and_computes_batch_norm_without_a_process_group():
    torch.manual_seed(0)
    model = create_model("cnn", in_channels=1, num_classes=10, widths=[4, 8, 8], norm="batch")
    reference = create_model("cnn", in_channels=1, num_classes=10, widths=[4, 8, 8], norm="batch")
    reference.load_state_dict(model.state_dict())
    params, keys = list(model.parameters()), list(model.state_dict())
    converted = convert_sync_batchnorm(model)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert [id(p) for p in converted.parameters()] == [id(p) for p in params]  # an optimizer keeps them
    assert list(converted.state_dict()) == keys  # checkpoints load into the model without it
    x = torch.rand(6, 1, 28, 28)
    assert torch.allclose(converted(x), reference(x), atol=1e-6)  # training mode: batch statistics
    assert all(torch.equal(a, b) for a, b in zip(converted.buffers(), reference.buffers()))


def test_sync_bn_is_refused_on_cpu_ranks():
    cpu_ranks = Ranks(rank=0, world=2, local_rank=0, device=torch.device("cpu"), seed=0)
    with pytest.raises(ConfigError, match="train.sync_bn=true needs CUDA"):
        check_sync_bn(True, cpu_ranks)
    check_sync_bn(True, None)  # one process: nothing to synchronise, nothing refused
    check_sync_bn(False, cpu_ranks)


def test_rank_seeds_differ_between_ranks_and_steps_and_repeat():
    seeds = {rank_seed(0, rank, step) for rank in range(4) for step in range(100)}
    assert len(seeds) == 400 and max(seeds) < 2**63
    assert rank_seed(7, 1, 5) == rank_seed(7, 1, 5)
