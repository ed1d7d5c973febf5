"""What the notebooks in notebooks/ share: the accelerators this runtime has, a mesh over them, and
tiny random pipelines for a quick run (configs/ is installed with the package: `from configs import demo`)."""
from __future__ import annotations

import dataclasses
import os

import jax

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Runtime:
    platform: str  # "tpu" | "gpu" | "cpu"
    devices: int
    device_kind: str
    memory_per_device_gib: float | None  # None: the platform does not say (CPU)

    @property
    def accelerated(self) -> bool:
        return self.platform in ("tpu", "gpu")

    def fits(self, gib: float) -> bool:
        """Whether `gib` of parameters and activations fit on all devices together (sharded)."""
        return self.memory_per_device_gib is not None and self.devices * self.memory_per_device_gib >= gib

    def __str__(self) -> str:
        memory = f"{self.memory_per_device_gib:.1f} GiB each" if self.memory_per_device_gib else "memory not reported"
        return f"{self.devices} x {self.device_kind} ({self.platform}, {memory})"


def detect_runtime() -> Runtime:
    devices = jax.local_devices()
    stats = devices[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return Runtime(devices[0].platform, len(devices), devices[0].device_kind, limit / GIB if limit else None)


def local_mesh():
    """A (data, fsdp, tensor) mesh with every local device on `fsdp`: each parameter is split over all chips."""
    from seedx_jax.sharding import make_mesh

    return make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, jax.local_devices())


def write_tiny_pipelines(out: str, seed: int = 0, *, overwrite: bool = False) -> tuple[str, str]:
    """Random SEED-X-I and SEED-X-Edit pipelines shaped like the shapes-world demo's (its tokenizer,
    tiny ViT, 2-layer LLM, 32 px de-tokenizers) under `out` -> their two paths. They let a notebook's
    flow run on a CPU in seconds; what they say and draw is noise. `overwrite` replaces pipelines an
    earlier call wrote there (a re-run notebook)."""
    import tempfile

    from flax import nnx

    from configs import demo
    from seedx_jax.agent.model import SeedXAgent
    from seedx_jax.checkpoint import save_pipeline
    from seedx_jax.demo.dataset import write_tokenizer
    from seedx_jax.detokenizer.model import Detokenizer
    from seedx_jax.train.build import model_configs
    from seedx_jax.vision.vit import QwenViT

    rngs = nnx.Rngs(seed)
    mllm = model_configs(demo.get_config("sft_comp_gen"))
    vit, agent = QwenViT(mllm["vit"], rngs=rngs), SeedXAgent(mllm["agent"], rngs=rngs)
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_tokenizer(os.path.join(tmp, "tokenizer"), seed=seed)
        for name, stage, template in (("seedx_i", "detok_stage1", "seed_x_i"),
                                      ("seedx_edit", "detok_stage2", "seed_x_edit")):
            detokenizer = Detokenizer(model_configs(demo.get_config(stage))["detokenizer"], rngs=rngs)
            paths.append(os.path.join(out, name))
            save_pipeline(paths[-1], tokenizer=tokenizer, vit=vit, agent=agent, detokenizer=detokenizer,
                          template=template, overwrite=overwrite)
    return paths[0], paths[1]
