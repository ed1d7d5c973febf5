"""`python -m seedx_jax.preflight` on the 8 fake CPU devices (issue 9): the devices, the mesh, the
per-device batch and a memory estimate from an AOT compile on abstract inputs, for a tiny and a
13B-shaped configuration (nothing allocated), and clear failures with advice."""
import os
import re
import subprocess
import sys

import pytest

from configs import sft_comp_gen
from seedx_jax.preflight import GIB, PreflightError, preflight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*flags):
    return subprocess.run([sys.executable, "-m", "seedx_jax.preflight", *flags], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_tiny_config_reports_devices_mesh_batch_and_memory():
    out = cli("--config", "configs/sft_edit.py:tiny", "--nocheck_files", "--config.data.sources.edit.micro_batch=8",
              "--config.mesh.data=2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "devices: 8 in all (cpu; platform cpu) over 1 process(es)"
    assert lines[1] == "  process 0 (this process): 8 devices, ids 0..7"
    assert lines[2] == "mesh: data=2 fsdp=4 tensor=1; a batch is split 8 ways"
    assert "source edit (edit): micro-batch 8 = 8 rows per process = 1 per device" in out.stdout
    memory = re.search(r"memory: ([\d.]+) (MiB|GiB) per device \(params", out.stdout)
    assert memory and float(memory[1]) > 0
    assert lines[-1] == "preflight: OK"


def test_batch_that_does_not_divide_the_mesh_fails_before_compiling():
    out = cli("--config", "configs/sft_edit.py:tiny", "--nocheck_files")  # tiny micro_batch 2 on 8 devices
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        "preflight: error: config.data.sources.edit.micro_batch=2 is not divisible by the batch mesh axes "
        "{'data': 1, 'fsdp': 8} (product 8); use a multiple of 8 (e.g. 8) and adjust config.train.accumulation "
        "to keep the global batch")
    assert "mesh: data=1 fsdp=8 tensor=1" in out.stdout and "compiling" not in out.stdout + out.stderr


def test_a_host_started_without_jax_distributed_is_caught(monkeypatch):
    """Inside a 2-task SLURM step, a process that did not join jax.distributed sees only itself."""
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(PreflightError, match="SLURM_NTASKS says 2 processes but JAX runs 1") as err:
        preflight(sft_comp_gen.get_config("tiny"), say=lambda line: None)
    assert "--distributed=on" in err.value.advice


def test_missing_files_are_listed_with_the_setting_to_fix():
    config = sft_comp_gen.get_config("tiny")
    config.mesh.num_devices = 2
    with pytest.raises(PreflightError, match=r"config.tokenizer='' is not a directory") as err:
        preflight(config, say=lambda line: None)
    assert "config.data.sources.vqa.paths='' matches no files" in err.value.advice
    assert "--nocheck_files" in err.value.advice


def test_13b_shaped_config_is_estimated_abstractly_and_fails_on_a_16_gib_chip():
    """SEED-X-I instruction tuning (Llama-2-13B + ViT-G, fp32 master weights) on 8 devices with FSDP: the
    frozen weights per device follow from the published parameter counts (13.0B LLM + 1.9B ViT-G,
    less the ~0.33B trainable embeddings) / 8 x 4 bytes; Adam keeps two moments per trainable value."""
    config = sft_comp_gen.get_config()
    del config.data.sources["unsplash"]  # one source: one compile
    lines = []
    with pytest.raises(PreflightError, match="more than the 16.0 GiB a device has") as err:
        preflight(config, device_memory_gib=16, check_files=False, say=lines.append)
    assert "mesh: data=1 fsdp=8 tensor=1; a batch is split 8 ways" in lines
    assert "source sharegpt4v (vqa): micro-batch 16 = 16 rows per process = 2 per device" in "\n".join(lines)
    memory = dict((k, float(v)) for k, v in re.findall(r"(params|optimizer|frozen|batch|temp) ([\d.]+)",
                                                        [s for s in lines if "memory:" in s][0]))
    frozen_expected = (13.0e9 + 1.9e9 - 0.33e9) * 4 / 8 / GIB
    assert abs(memory["frozen"] - frozen_expected) < 0.1 * frozen_expected, memory
    assert abs(memory["optimizer"] - 2 * memory["params"]) <= 0.02, memory  # sharded like the parameters
    assert memory["temp"] > 0 and memory["batch"] > 0
    advice = err.value.advice.splitlines()  # the larger part first: here the activations
    assert advice[1].startswith("- activations and temporaries") and "micro_batch (now 2 rows per device)" in advice[1]
    assert "remat='full'" in advice[1] and "sharded over all 8 devices already" in advice[2]
