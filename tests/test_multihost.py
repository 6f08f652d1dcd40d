"""Multi-host on localhost CPU: two `main.py --distributed` processes of 2 devices each (jax.distributed, gloo
collectives) train to the same parameters as one process of 4 devices, also when both are killed and resumed."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import read_scalars
from tests.test_train import REPO, finished_steps, load_params

STEPS = ("--config.training.num_train_steps=16", "--config.training.checkpoint_every_steps=4",
         "--config.training.log_every_steps=3", "--config.training.eval_every_epochs=0.0214")  # eval at step 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(workdir, data_dir, devices, *, process_id=None, port=None):
    """`main.py` on configs/test.py with `devices` CPU devices; one of two processes when `process_id` is given."""
    env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "main.py", f"--workdir={workdir}", "--config=configs/test.py",
               f"--config.data.data_dir={data_dir}", *STEPS]
    if process_id is not None:
        env |= {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(process_id)}
        command.append("--distributed")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def two_processes(workdir, data_dir):
    port = free_port()
    return [start(workdir, data_dir, 2, process_id=i, port=port) for i in range(2)]


def finish(processes):
    outputs = [p.communicate(timeout=400)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    return outputs


@pytest.mark.slow
def test_two_processes_of_two_devices_equal_one_of_four_across_a_kill(tfds_data_dir, tmp_path):
    reference_dir, multi_dir = str(tmp_path / "one_by_four"), str(tmp_path / "two_by_two")
    finish([start(reference_dir, tfds_data_dir, 4)])  # also prepares the dataset before two processes read it

    processes = two_processes(multi_dir, tfds_data_dir)
    deadline = time.time() + 300
    while max(finished_steps(multi_dir), default=0) == 0 and time.time() < deadline:
        assert all(p.poll() is None for p in processes), processes[0].communicate()[0][-3000:]
        time.sleep(0.01)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        process.communicate()
    killed_at = max(finished_steps(multi_dir))
    assert 0 < killed_at < 16

    outputs = finish(two_processes(multi_dir, tfds_data_dir))
    assert all(f"Resumed from the checkpoint at step {killed_at}" in output for output in outputs)
    assert "JAX process 1/2" in outputs[1]
    reference, multi = load_params(reference_dir, 16), load_params(multi_dir, 16)
    jax.tree.map(np.testing.assert_array_equal, reference, multi)
    # Process 0 alone wrote the events, each step once: the train losses and eval accuracies (counts) are those
    # of the one-process run (the eval loss sums in another order: its batches hold other examples).
    for tag in ("train_loss", "train_accuracy", "eval_accuracy"):
        assert read_scalars(multi_dir)[tag] == read_scalars(reference_dir)[tag], tag
