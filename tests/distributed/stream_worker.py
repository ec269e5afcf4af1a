"""One rank of the streamed-folder test: a shuffled training StreamLoader that decodes this rank's rows
and gathers the global batch, and an evaluation one sharded by blocks; rank 0 saves to argv[2] what
both yielded and how many files each rank decoded."""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from tests.distributed.test_streamed_folders import stream_loaders
from trainlab.data.shard import gather_rows, shard_evaluation
from trainlab.data.stream import FileImages
from trainlab.inference import Predictor
from trainlab.tasks.base import create_task
from trainlab.training.distributed import init_distributed

if __name__ == "__main__":
    ranks = init_distributed(torch.device("cpu"), seed=0)
    decoded = []
    read = FileImages.read
    FileImages.read = lambda self, index: decoded.append(index) or read(self, index)
    train, test = stream_loaders(sys.argv[1])
    train.rows = (ranks.rank, ranks.world)
    batches = [(images, labels) for images, labels in train]
    flat = torch.nn.Flatten()
    outputs, targets = Predictor(flat, create_task("classification")).run(shard_evaluation(test))
    per_rank = gather_rows(torch.tensor([len(decoded)]))
    if ranks.is_writer:
        tensors = {
            "train_images": torch.cat([b[0] for b in batches]),
            "train_labels": torch.cat([b[1] for b in batches]),
        }
        save_file(
            {**tensors, "test_outputs": outputs, "test_targets": targets, "per_rank": per_rank}, sys.argv[2]
        )
