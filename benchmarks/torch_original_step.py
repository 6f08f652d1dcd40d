r"""Train-step speed of the PyTorch original's CIFAR-100 dual-pathway ResNet-18, the other side of the CPU ratio in
BENCHMARKS.md ("Closing the CPU gap to the PyTorch original"). torch is not a dependency of this project: run this
module with a scratch venv's Python from the repository root, outside the project's environment, on a
checkout of the original.

  python -m venv /tmp/torchab/venv && /tmp/torchab/venv/bin/pip install torch numpy tqdm
  git clone https://github.com/clingergab/Multi-Stream-Neural-Networks /tmp/torchab/original  # used: 1da00e6
  /tmp/torchab/venv/bin/python -m benchmarks.torch_original_step --source=/tmp/torchab/original/src \
      --steps=10 --rounds=3 --threads=2
  # the same shapes here: python -m benchmarks.step_speed --models=cifar100_mc --dtypes=float32 \
  #     --statistics=off --batch=64 --steps=10 --rounds=3

Alternate the two commands as separate processes on an idle machine and compare the medians. The step timed is
`zero_grad / forward / cross-entropy / backward / clip_grad_norm_(1.0) / Adam(3e-4, weight decay 1e-4).step()` on
one random batch (color 3x32x32, brightness 1x32x32, 100 classes), after 3 warm-up steps. `--parts` times instead,
in ms per call, the forward pass with the loss (training mode, `no_grad`), forward + backward and the whole step,
as `python -m benchmarks.step_parts` does on this project's side.
"""

import argparse
import functools
import importlib
import os
import statistics
import sys
import time
import types

from benchmarks.timing import mean_ms, print_step_parts, time_in_rounds


def load_original(source: str):
    """The original's `multi_channel_resnet_network` module from its `src` directory. Its modules mix absolute
    (`from models_old.base import ...`) and relative (`from ..utils import ...`) imports, so the packages are
    registered under both names without running their `__init__` files (which import unrelated modules);
    matplotlib, imported by `models_old/base.py` for plotting only, gets an empty stand-in."""
    for name in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))

    def package(name: str, path: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__path__ = [path]
        sys.modules[name] = module
        return module

    package("src", source)
    for sub in ("models_old", "utils", "models_old/layers", "models_old/basic_multi_channel"):
        sys.modules[sub.replace("/", ".")] = package("src." + sub.replace("/", "."), os.path.join(source, sub))
    for name in ("utils.device_utils", "utils.grad_utils", "models_old.layers.conv_layers",
                 "models_old.layers.resnet_blocks", "models_old.base"):
        sys.modules[name] = importlib.import_module("src." + name)
    return importlib.import_module("src.models_old.basic_multi_channel.multi_channel_resnet_network")


def main() -> None:
    """Prints the parameter counts, images/s per round and their median."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="The original checkout's src directory.")
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; the median is reported.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    parser.add_argument("--batch", type=int, default=64, help="Batch size.")
    parser.add_argument("--parts", action="store_true", help="Time forward, forward + backward and step (ms).")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_original(args.source).MultiChannelResNetNetwork.for_cifar100()
    model.train()
    params = list(model.parameters())
    color, brightness = torch.randn(args.batch, 3, 32, 32), torch.randn(args.batch, 1, 32, 32)
    labels = torch.randint(0, 100, (args.batch,))
    optimizer = torch.optim.Adam(params, lr=3e-4, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def forward():
        with torch.no_grad():
            return loss_fn(model(color, brightness), labels)

    def forward_backward():
        optimizer.zero_grad()
        loss = loss_fn(model(color, brightness), labels)
        loss.backward()
        return loss

    def step():
        loss = forward_backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss

    for _ in range(3):
        step()
    total = sum(p.numel() for p in params)
    trained = sum(p.numel() for p in params if p.grad is not None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}; "
          f"parameters {total:,}, with a gradient {trained:,}")
    if args.parts:
        parts = {"forward": forward, "forward + backward": forward_backward, "step": step}
        print_step_parts(time_in_rounds({name: functools.partial(mean_ms, fn, args.steps, lambda result: result)
                                         for name, fn in parts.items()}, args.rounds))
        return
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        float(loss)
        rates.append(args.steps * args.batch / (time.perf_counter() - start))
    print(f"images/s per round {[round(rate, 1) for rate in rates]}, median {statistics.median(rates):.1f}")


if __name__ == "__main__":
    main()
