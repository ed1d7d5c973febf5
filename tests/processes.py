"""Child processes of the tests: several JAX processes on loopback (a free port, a watchdog run) and a Ctrl-C-able
child."""
import os
import re
import signal
import socket
import subprocess


def cpu_env(devices: int) -> dict:
    """This environment for a child JAX process on `devices` fake CPU devices (conftest's other XLA
    flags kept)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", "")).split()
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    return dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(commands, *, timeout: float, **popen) -> None:
    """Start every command, wait for all (killing them after `timeout` s: a hung collective), and
    fail with their combined output unless each exits 0."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
             for cmd in commands]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)


def interruptible():
    """`preexec_fn` for a child that is sent Ctrl-C: SIGINT deliverable and not ignored, as a shell starts a
    foreground command. Both states are inherited from the pytest worker, where an earlier test's library
    code may have blocked or ignored SIGINT; the child would then never see the signal."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
