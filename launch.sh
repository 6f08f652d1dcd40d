#!/usr/bin/env bash
# One place for the environment, multi-host launch and TensorBoard.
#
#   ./launch.sh train --workdir=workdirs/default --config=configs/default.py [--config.x=y ...]
#   ./launch.sh tensorboard workdirs/            # serves the workdir(s) on port ${TB_PORT:-6006}
#   ./launch.sh test                             # the test suite (as the README and CI run it)
#
# Multi-host: run the same `./launch.sh train ...` on every host. With JAX_COORDINATOR_ADDRESS (host:port of
# process 0) + JAX_NUM_PROCESSES + JAX_PROCESS_ID, main.py passes all three to `jax.distributed.initialize`;
# under SLURM (srun with several tasks) and on Cloud TPU VMs JAX detects them itself. On a single host without
# these it is skipped.
set -euo pipefail
cd "$(dirname "$0")"

# TensorFlow only feeds data here: keep it off the accelerators and quiet.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export CUDA_MODULE_LOADING="${CUDA_MODULE_LOADING:-LAZY}"
# Let JAX take most GPU memory up front (its default) but leave room for the input pipeline.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

is_multi_host() {
  [[ -n "${JAX_COORDINATOR_ADDRESS:-}" ]] || [[ -n "${SLURM_NTASKS:-}" && "${SLURM_NTASKS}" -gt 1 ]] \
    || [[ -n "${TPU_WORKER_HOSTNAMES:-}" && "${TPU_WORKER_HOSTNAMES}" == *,* ]] \
    || [[ -e /dev/accel0 ]]  # a Cloud TPU VM: JAX asks the metadata server for its peers
}

command="${1:-}"
shift || true
case "${command}" in
  train)
    if is_multi_host; then
      exec python main.py --distributed "$@"
    fi
    exec python main.py "$@"
    ;;
  tensorboard)
    exec tensorboard --logdir "${1:-workdirs}" --port "${TB_PORT:-6006}" --bind_all
    ;;
  test)
    exec python -m pytest -q "$@"
    ;;
  *)
    sed -n '2,10p' "$0"
    exit 2
    ;;
esac
