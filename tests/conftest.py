"""Test session setup, before JAX initialises a backend.

* 8 fake CPU devices, for the sharding tests.
* SEEDX_TEST_PLATFORM (default "cpu") becomes JAX_PLATFORMS; `make test-gpu` / `make test-tpu`
  set it to "auto" so the accelerator is used.
* Hugging Face stays offline: every test builds its tiny models itself.
* On CPU, XLA compiles without LLVM's optimisation passes, for this session and the processes its
  tests start (command lines, notebook kernels, trainer runs). The tiny test models spend seconds
  compiling and milliseconds running, and their eager initialisers compile a program per parameter
  shape: this halves the suite's compile time. Results stay within float32 rounding of an optimised
  build (the parity tolerances are unchanged); benchmarks (bench/) never run with it.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
_platform = os.environ.get("SEEDX_TEST_PLATFORM", "cpu")
if _platform != "auto":
    os.environ["JAX_PLATFORMS"] = _platform
if _platform == "cpu":
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
