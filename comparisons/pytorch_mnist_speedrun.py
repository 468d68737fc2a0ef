"""The PyTorch side of the MNIST speed race: the final recipe of tuomaso/train_mnist_fast
(8_Final_00s76.ipynb) as a CPU script, so that `scripts/benchmark.py --time_to_accuracy` has a
PyTorch reference measured on the same machine, in the same sitting.

Run it in an environment of its own (torch is never a dependency of tapeloop, and the tests do not
need it):

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
    /tmp/torch-venv/bin/python comparisons/pytorch_mnist_speedrun.py --data_dir=../shared/data/mnist --seeds=0,1,2,3,4

The recipe, as published: conv 5x5 to 24 channels, max-pool, ReLU, conv 3x3 to 32, max-pool, ReLU,
dense 800-256-10 (no batch norm, no dropout); Adam at 1e-2 with betas (0.7, 0.9), one-cycle without
momentum cycling, batch 256, one epoch; the images normalized by MNIST's mean and std and held in
memory, shuffled once. Training seconds exclude loading the data and scoring the test split. Prints
one JSON line per seed, then a summary line (with the training FLOPs per example that PyTorch's
FlopCounterMode counts).
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.1307, 0.3081


def read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as stream:
        data = stream.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def split(data_dir: str, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
    def find(name):
        return next(os.path.join(data_dir, candidate) for candidate in (name + ".gz", name)
                    if os.path.exists(os.path.join(data_dir, candidate)))
    x = torch.from_numpy(read_idx(find(images)).astype(np.float32) / 255.0)
    x = ((x - MEAN) / STD).unsqueeze(1)
    return x, torch.from_numpy(read_idx(find(labels)).astype(np.int64))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 24, 5, 1)
        self.conv2 = nn.Conv2d(24, 32, 3, 1)
        self.fc1 = nn.Linear(800, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def run(seed: int, train, test, batch_size: int = 256, lr: float = 1e-2, epochs: int = 1) -> dict:
    torch.manual_seed(seed)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train[1])))  # Shuffled once.
    x_train, y_train = train[0][order], train[1][order]
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.7, 0.9))
    batches = (len(y_train) - 1) // batch_size + 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=batches * epochs,
                                                    cycle_momentum=False)
    model.train()
    started = time.perf_counter()
    for step in range(batches * epochs):
        i = step % batches
        optimizer.zero_grad()
        loss = F.nll_loss(model(x_train[batch_size * i:batch_size * (i + 1)]),
                          y_train[batch_size * i:batch_size * (i + 1)])
        loss.backward()
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(test[0][i:i + 2000]).argmax(dim=1) for i in range(0, len(test[1]), 2000)])
    return {"seed": seed, "training_seconds": seconds, "test_accuracy": float((predicted == test[1]).float().mean()),
            "examples_per_sec": batches * epochs * batch_size / seconds, "epochs": epochs}


def training_flops_per_example(batch_size: int = 256) -> float:
    """Floating-point operations of one example's training step (forward and backward), as PyTorch's
    FlopCounterMode counts them: the convolutions and matrix products, a multiply-add as 2."""
    from torch.utils.flop_counter import FlopCounterMode

    model = Net()
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(model(torch.zeros(batch_size, 1, 28, 28)), torch.zeros(batch_size, dtype=torch.int64)).backward()
    return counter.get_total_flops() / batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="MNIST's four IDX files (gzipped or not).")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="Comma-separated seeds, one run each.")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = split(args.data_dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test = split(args.data_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    runs = [run(int(seed), train, test) for seed in args.seeds.split(",")]
    for result in runs:
        print(json.dumps(result))
    accuracies = [result["test_accuracy"] for result in runs]
    print(json.dumps({"recipe": "tuomaso/train_mnist_fast 8_Final", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "seeds": len(runs),
                      "median_training_seconds": statistics.median(r["training_seconds"] for r in runs),
                      "mean_test_accuracy": statistics.mean(accuracies), "min_test_accuracy": min(accuracies),
                      "max_test_accuracy": max(accuracies),
                      "training_flops_per_example": training_flops_per_example()}))


if __name__ == "__main__":
    main()
