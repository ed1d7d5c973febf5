"""Test session setup, before JAX initialises a backend.

* 8 fake CPU devices, for the sharding tests.
* SEEDX_TEST_PLATFORM (default "cpu") becomes JAX_PLATFORMS; `make test-gpu` / `make test-tpu`
  set it to "auto" so the accelerator is used.
* Hugging Face stays offline: every test builds its tiny models itself.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
_platform = os.environ.get("SEEDX_TEST_PLATFORM", "cpu")
if _platform != "auto":
    os.environ["JAX_PLATFORMS"] = _platform
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
