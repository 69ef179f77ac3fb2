"""launch/ scripts: the TPU launcher's dry run prints the whole gcloud sequence."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tpu_dry_run_7b_v5p():
    out = subprocess.run(
        ["bash", "launch/tpu.sh", "--dry-run", "--name=grow7b", "--zone=us-east5-a",
         "--type=v5p-64", "--config=configs/qwen2_vl_7b_tpu.py", "--workdir=gs://bucket/run",
         "--", "--config.model.hf_dir=/mnt/ckpt/qwen"], cwd=ROOT, capture_output=True,
        text=True, check=True).stdout.splitlines()
    steps = [" ".join(line.split()[:5]) for line in out]
    assert steps == [
        "gcloud compute tpus tpu-vm create",
        "tar czf /tmp/grow_jax_grow7b.tar.gz --exclude=.git --exclude=runs",
        "gcloud compute tpus tpu-vm scp",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus tpu-vm ssh",
        "gcloud compute tpus tpu-vm delete",
    ]
    assert "--accelerator-type=v5p-64" in out[0] and "--version=v2-alpha-tpuv5" in out[0]
    assert "--worker=all" in out[2] and "--worker=all" in out[3] and "--worker=all" in out[4]
    run = out[4].replace("\\", "")
    assert "python -m grow_jax.main --config=configs/qwen2_vl_7b_tpu.py" in run
    assert "--workdir=gs://bucket/run" in run and "--distributed=auto" in run
    assert "--config.model.hf_dir=/mnt/ckpt/qwen" in run
    assert "--worker=0" in out[5] and "tail" in out[5]


def test_tpu_missing_argument():
    r = subprocess.run(["bash", "launch/tpu.sh", "--dry-run", "--name=x"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--zone=... is required" in r.stderr


def test_slurm_script_is_valid_bash():
    subprocess.run(["bash", "-n", "launch/gpu_slurm.sh"], cwd=ROOT, check=True)
    subprocess.run(["bash", "-n", "launch/local.sh"], cwd=ROOT, check=True)
