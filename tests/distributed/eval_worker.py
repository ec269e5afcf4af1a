"""One rank of the sharded evaluation test: evaluates the split of `eval_split` on its block of batches
through the run's Predictor and, on rank 0, saves to argv[1] the gathered outputs and targets and how
many images each rank put through the model."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from tests.distributed.test_sharded_evaluation import eval_split
from trainlab.data.shard import gather_rows, shard_evaluation
from trainlab.training.distributed import init_distributed

if __name__ == "__main__":
    torch.set_num_threads(1)
    ranks = init_distributed(torch.device("cpu"), seed=0)
    predictor, loader = eval_split()
    seen = []
    outputs_of = predictor.outputs
    predictor.outputs = lambda images: seen.append(len(images)) or outputs_of(images)
    outputs, targets = predictor.run(shard_evaluation(loader))
    per_rank = gather_rows(torch.tensor([sum(seen)]))
    if ranks.is_writer:
        save_file({"outputs": outputs, "targets": targets, "per_rank": per_rank}, sys.argv[1])
