"""`seedx-jax serve [--checkpoint DIR] [--edit-checkpoint DIR] [--host H] [--port P] [--mesh axis=n,...]`:
the SEED-X web app (Gradio) and HTTP JSON API, models loaded once, sharded over the host's devices.

Bad arguments, a checkpoint that is not a pipeline and a port already in use are one line and exit 2
before any weight loads. The server writes only into a folder of its own (uploads, generated images,
tiny random pipelines when nothing else is served), made at start and removed at exit. Ctrl-C / SIGTERM
stop it (exit 0).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile

from seedx_jax import paths
from seedx_jax.exits import ArgumentParser, describe, error_line, interrupts_as_exceptions
from seedx_jax.precision import COMPUTE_DTYPES, LLM_WEIGHTS, Precision
from seedx_jax.sharding import mesh_argument

PROG = "seedx-jax serve"


def build_parser() -> ArgumentParser:
    from seedx_jax.cli import _int_at_least, _number, _side, _seed

    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=paths.argument,
                   help="SEED-X-I pipeline directory: chat, grounding, text-to-image, reconstruction (default: "
                        "demo_report/models/seedx_i of `make demo` when present, else tiny random pipelines)")
    p.add_argument("--edit-checkpoint", type=paths.argument,
                   help="SEED-X-Edit pipeline directory (stage-2 de-tokenizer) for the Edit tab")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    p.add_argument("--mesh", type=mesh_argument, help="(data, fsdp, tensor) mesh for the parameters, e.g. fsdp=-1 "
                                                      "(default: fsdp over every local accelerator; none on a CPU)")
    p.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default="float32",
                   help="matmul precision of every model (weights stay fp32; as in `seedx-jax chat`)")
    p.add_argument("--llm-weights", choices=LLM_WEIGHTS, default="float",
                   help="int8: weight-only int8 LLM for faster decoding (as in `seedx-jax chat`)")
    defaults = p.add_argument_group("the app's starting render settings (default: SEED-X's 1024 px, 50 steps, "
                                    "CFG 7.5; for the demo / untrained models: 32 px, 20 steps, CFG 3)")
    defaults.add_argument("--height", type=_side)
    defaults.add_argument("--width", type=_side)
    defaults.add_argument("--steps", type=_int_at_least(1))
    defaults.add_argument("--guidance-scale", type=_number)
    defaults.add_argument("--seed", type=_seed)
    limits = p.add_argument_group("what one request may ask for")
    limits.add_argument("--max-side", type=_side, default=2048, help="largest image side in pixels (default 2048)")
    limits.add_argument("--max-steps", type=_int_at_least(1), default=100, help="most sampler steps (default 100)")
    limits.add_argument("--max-image-pixels", type=_int_at_least(1), default=25_000_000,
                        help="largest upload in pixels (default 25,000,000)")
    return p


def _port(text: str) -> int:
    from seedx_jax.cli import _int_at_least

    value = _int_at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} must be at most 65535")
    return value


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({err.strerror})") from None


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a usage error (one line, exit 2) or --help
        return e.code
    own = tempfile.mkdtemp(prefix="seedx-serve-")
    try:
        return _serve(args, own)
    finally:
        shutil.rmtree(own, ignore_errors=True)  # made by this run, holds only what it wrote


def _serve(args, own: str) -> int:
    import dataclasses

    from seedx_jax.checkpoint import CheckpointError
    from seedx_jax.progress import Progress
    from seedx_jax.serve import models
    from seedx_jax.serve.service import Limits, Service

    progress = Progress()
    try:
        _check_port(args.host, args.port)
        precision = Precision(compute_dtype=args.compute_dtype, llm_weights=args.llm_weights)
        precision.check_device()
        choice = models.choose(args.checkpoint, args.edit_checkpoint, own)
        pipes = models.open_pipelines(choice)
        limits = Limits(max_side=args.max_side, max_steps=args.max_steps, max_image_pixels=args.max_image_pixels)
        chosen = {k: v for k, v in (("height", args.height), ("width", args.width), ("steps", args.steps),
                                    ("guidance_scale", args.guidance_scale), ("seed", args.seed)) if v is not None}
        defaults = dataclasses.replace(choice.defaults, **chosen)
        service = Service(*pipes, limits=limits, defaults=defaults, banner=choice.banner)
        service.settings()  # the defaults themselves within the limits and the pixel factor
        mesh = _mesh(args.mesh)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"{PROG}: error: {error_line(err)}", file=sys.stderr)
        return 2
    models.load(choice, pipes, mesh=mesh, precision=precision, progress=progress)
    from seedx_jax.serve.app import Server, make_app

    server = Server(make_app(service, own), args.host, args.port)
    if choice.banner:
        print(choice.banner, file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"listening on {args.host}:{args.port}: other machines can reach it, and the app has no login",
              file=sys.stderr)
    print(f"serving on {server.url} (web app; JSON API under {server.url}/api/v1); Ctrl-C stops", file=sys.stderr)
    try:
        with interrupts_as_exceptions():  # uvicorn stops gracefully, then re-raises the signal it caught
            server.run()
    except KeyboardInterrupt as err:  # Ctrl-C and SIGTERM: the way a server is stopped
        print(f"{PROG}: {describe(err)}; stopped", file=sys.stderr)
    return 0


def _mesh(config):
    from seedx_jax.notebook import detect_runtime, local_mesh
    from seedx_jax.sharding import make_mesh

    if config:
        return make_mesh(config)
    return local_mesh() if detect_runtime().accelerated else None
