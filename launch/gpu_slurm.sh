#!/usr/bin/env bash
# sbatch script: one grow_jax process per node, each driving the node's 8 GPUs; JAX reads
# the coordinator, process count and id from SLURM's environment (jax.distributed).
#
#   sbatch --nodes=N launch/gpu_slurm.sh configs/qwen2_vl_7b_gpu.py runs/grow7b [--config.KEY=V ...]
#
#SBATCH --job-name=grow_jax
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --exclusive
#SBATCH --output=grow_jax_%j.log
set -euo pipefail
CONFIG=${1:?usage: sbatch --nodes=N launch/gpu_slurm.sh CONFIG WORKDIR [overrides...]}
WORKDIR=${2:?usage: sbatch --nodes=N launch/gpu_slurm.sh CONFIG WORKDIR [overrides...]}
shift 2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# WORKDIR must be on a file system every node sees (orbax writes shards from each process).
srun --kill-on-bad-exit=1 python -m grow_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
  --distributed=auto "$@"
