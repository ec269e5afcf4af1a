"""Two "machines" on localhost, one process each, joined by torchrun's c10d rendezvous, train what one
process trains."""

from __future__ import annotations

import pytest

from tests.distributed.launching import RUN, assert_same_training, environment, free_port, torchrun, weights
from trainlab.cli import main


# -m slow: two torchrun launches (about 20 s of a worker); CI's whole suite must stay under 10 minutes on
# 2 cores, and test_exact_training covers the same training on two ranks of one node
@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_agree_with_one_process(tiny_mnist, tmp_path):
    one, nodes = tmp_path / "one", tmp_path / "nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    env = environment(tiny_mnist.parent)
    agents = [
        torchrun(
            [
                "--nnodes=2",
                f"--node-rank={r}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={endpoint}",
                "--rdzv-id=two-nodes",
            ],
            "train",
            *RUN,
            "--out",
            str(nodes),
            env=env,
        )  # fmt: skip
        for r in (0, 1)
    ]
    results = [agent.communicate(timeout=180) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(err[-2000:] for _, err in results)
    assert main(["train", *RUN, "--out", str(one)]) == 0
    assert_same_training(weights(one), weights(nodes))
