"""The shipped configs from any working directory: installed with the package (the wheel holds them),
`--config` of `python -m seedx_jax.train` / `seedx_jax.preflight` by file path (relative or absolute)
or by name, every model field overridable from the command line with its type, bad input one line and
exit 2, and the model configs the shipped configs build unchanged by expanding their presets."""
import dataclasses
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import types
import typing
import zipfile

import pytest
from absl import flags
from ml_collections import ConfigDict, config_flags

import configs
from configs import sft_edit
from seedx_jax.agent.config import AgentConfig
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.lora import LoraConfig
from seedx_jax.train.build import build_data, load_tokenizer, model_configs
from seedx_jax.train.config_files import config_file
from seedx_jax.vision.vit import VisionConfig
from train_fixtures import write_all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = [(name, variant) for name in ("detok_stage1", "detok_stage2", "pretrain", "sft_comp_gen", "sft_edit")
           for variant in ("", "tiny")] + [("demo", s) for s in ("detok_stage1", "detok_stage2", "sft_comp_gen",
                                                                 "sft_edit")]

# Key fields of model_configs() of every shipped config, recorded from the code before the presets were
# expanded into the configs (when configs held `dict(preset="tiny")`):
# vit: (image_size, width, layers, heads, output_dim, pool_heads, dtype, remat)
# llm: (vocab_size, hidden_size, intermediate_size, layers, heads, dtype, remat)
# resamplers: input (embed_dim, num_heads, kv_dim, dtype), output (embed_dim, num_heads, kv_dim, dtype)
# lora: (rank, alpha, len(modules_to_save))
# resampler: (dim, depth, num_queries, embedding_dim, output1_dim, output2_dim)
# unet: (in_channels, block_out_channels, transformer_layers_per_block, cross_attention_dim, dtype, remat)
# vae: (block_out_channels, scaling_factor)
FULL_VIT = (448, 1664, 48, 16, 4096, 32, "bfloat16", "full")
TINY_VIT = (224, 64, 2, 4, 16, 2, "float32", "none")
DEMO_VIT = (224, 64, 2, 4, 64, 1, "float32", "none")
FULL_MLLM = {"vit": FULL_VIT, "llm": (32330, 5120, 13824, 40, 40, "bfloat16", "dots_no_batch"),
             "resamplers": (5120, 32, 4096, "bfloat16", 4096, 32, 5120, "bfloat16"), "lora": (32, 32.0, 3)}
TINY_MLLM = {"vit": TINY_VIT, "llm": (650, 64, 128, 2, 4, "float32", "none"),
             "resamplers": (64, 4, 16, "float32", 16, 2, 64, "float32"), "lora": (4, 4.0, 3)}
DEMO_MLLM = {"vit": DEMO_VIT, "llm": (730, 128, 256, 2, 4, "float32", "none"),
             "resamplers": (128, 4, 64, "float32", 64, 2, 128, "float32"), "lora": (4, 4.0, 10)}


def _detok(vit, resampler, in_channels, unet, vae):
    return {"vit": vit, "resampler": resampler, "unet": (in_channels, *unet), "vae": vae}


FULL_DETOK = ((1024, 4, 64, 4096, 768, 1280), ((320, 640, 1280), (1, 2, 10), 2048, "bfloat16", "full"),
              ((128, 256, 512, 512), 0.13025))
TINY_DETOK = ((32, 2, 4, 16, 4, 20), ((32, 64, 64), (1, 2, 3), 24, "float32", "none"), ((16, 32), 0.13025))
DEMO_DETOK = ((32, 2, 64, 64, 4, 20), ((32, 64, 64), (1, 1, 1), 24, "float32", "none"), ((16, 32, 32), 0.13025))
EXPECTED = {
    "demo:detok_stage1": _detok(DEMO_VIT, DEMO_DETOK[0], 4, DEMO_DETOK[1], DEMO_DETOK[2]),
    "demo:detok_stage2": _detok(DEMO_VIT, DEMO_DETOK[0], 8, DEMO_DETOK[1], DEMO_DETOK[2]),
    "demo:sft_comp_gen": DEMO_MLLM, "demo:sft_edit": DEMO_MLLM,
    "detok_stage1:": _detok(FULL_VIT, FULL_DETOK[0], 4, FULL_DETOK[1], FULL_DETOK[2]),
    "detok_stage1:tiny": _detok(TINY_VIT, TINY_DETOK[0], 4, TINY_DETOK[1], TINY_DETOK[2]),
    "detok_stage2:": _detok(FULL_VIT, FULL_DETOK[0], 8, FULL_DETOK[1], FULL_DETOK[2]),
    "detok_stage2:tiny": _detok(TINY_VIT, TINY_DETOK[0], 8, TINY_DETOK[1], TINY_DETOK[2]),
    "pretrain:": FULL_MLLM, "pretrain:tiny": TINY_MLLM,
    "sft_comp_gen:": FULL_MLLM, "sft_comp_gen:tiny": TINY_MLLM,
    "sft_edit:": FULL_MLLM, "sft_edit:tiny": TINY_MLLM,
}

# Run in a folder outside the checkout: loads every shipped config by name, by a relative and by an
# absolute path through `config_file` and ml_collections' flag, prints the key fields of model_configs.
LOAD_ALL = """
import json, os, sys
from absl import flags
from ml_collections import config_flags
from seedx_jax.train.build import model_configs
from seedx_jax.train.config_files import config_file

def key_fields(cfgs):
    v = cfgs["vit"]
    out = {"vit": [v.image_size, v.width, v.layers, v.heads, v.output_dim, v.pool_heads, v.dtype, v.remat]}
    if "agent" in cfgs:
        a = cfgs["agent"]; l, i, o = a.llm, a.input_resampler, a.output_resampler
        out["llm"] = [l.vocab_size, l.hidden_size, l.intermediate_size, l.num_hidden_layers, l.num_attention_heads,
                      l.dtype, l.remat]
        out["resamplers"] = [i.embed_dim, i.num_heads, i.kv_dim, i.dtype, o.embed_dim, o.num_heads, o.kv_dim, o.dtype]
        out["lora"] = [l.lora.rank, l.lora.alpha, len(l.lora.modules_to_save)]
    else:
        d = cfgs["detokenizer"]; r, u = d.resampler, d.unet
        out["resampler"] = [r.dim, r.depth, r.num_queries, r.embedding_dim, r.output1_dim, r.output2_dim]
        out["unet"] = [u.in_channels, list(u.block_out_channels), list(u.transformer_layers_per_block),
                       u.cross_attention_dim, u.dtype, u.remat]
        out["vae"] = [list(d.vae.block_out_channels), d.vae.scaling_factor]
    return out

results = {}
for spec in sys.argv[1:]:
    values = flags.FlagValues()
    argv = ["prog", "--config", config_file(spec)]
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    results[spec] = key_fields(model_configs(values.config))
import configs
from configs import sft_edit
print(json.dumps({"configs": configs.__file__, "results": results}))
"""


def _as_lists(value):
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return [_as_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def test_shipped_configs_load_by_name_and_path_from_another_directory(tmp_path):
    """Not on sys.path via the checkout: the installed `configs` package, from a folder outside it."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    specs = {}
    for name, variant in SHIPPED:
        key = f"{name}:{variant}"
        path = os.path.join(ROOT, "configs", f"{name}.py")
        specs[key] = [f"{name}:{variant}" if variant else name, f"{os.path.relpath(path, cwd)}:{variant}", path
                      + (f":{variant}" if variant else "")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", LOAD_ALL, *[s for forms in specs.values() for s in forms]], cwd=cwd,
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["configs"] == os.path.join(ROOT, "configs", "__init__.py")
    for key, forms in specs.items():
        for form in forms:
            assert report["results"][form] == _as_lists(EXPECTED[key]), (form, report["results"][form])


def test_the_wheel_holds_the_configs(tmp_path):
    """A non-editable install (`pip install .`) has configs/ too."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("seedx_jax", "configs"):
        shutil.copytree(os.path.join(ROOT, part), src / part, ignore=ignore)
    shutil.copy(os.path.join(ROOT, "setup.py"), src / "setup.py")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").iterdir()
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"configs/{f}" for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")}
    assert shipped <= names and "configs/train_common.py" in names


def test_config_file_takes_paths_and_names_and_refuses_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.py").write_text("")
    assert config_file("mine.py:tiny") == f"{tmp_path}/mine.py:tiny"
    assert config_file("~/mine.py") == f"{tmp_path}/mine.py"
    assert config_file("demo:sft_edit") == os.path.join(os.path.dirname(configs.__file__), "demo.py") + ":sft_edit"
    for bad in ("configs/sft_edit.py:tiny", "llama_tiny", "train_common", ""):
        with pytest.raises(ValueError, match="no such file, and no shipped config of that name .shipped: demo, "):
            config_file(bad)


def test_a_bad_variant_names_configs_that_load_from_any_directory(tmp_path, monkeypatch):
    """The remedy in the error of an unknown variant (a demo stage) is `--config` values that work in any
    working directory: shipped names, not paths into the checkout."""
    monkeypatch.chdir(tmp_path)
    for name in configs.TRAINING:
        module = importlib.import_module(f"configs.{name}")
        with pytest.raises(ValueError) as caught:
            module.get_config("nosuchvariant")
        message = str(caught.value)
        assert message.startswith(f"{name}:nosuchvariant: unknown "), message
        remedies = re.findall(rf"(?<![\w/.]){name}(?::\w+)?(?![\w/.])", message.partition("; ")[2])
        assert remedies, message
        for remedy in remedies:
            _, _, variant = config_file(remedy).partition(":")
            module.get_config(variant)


def _field_kinds(cls, prefix="") -> dict:
    """{leaf field path: the type it holds when set} of the model-config dataclass `cls` (`int | None` ->
    int, `tuple[int, ...]` -> tuple); the LLM's LoRA is left out (`model.lora` configures it)."""
    out, hints = {}, typing.get_type_hints(cls)
    for name, hint in ((f.name, hints[f.name]) for f in dataclasses.fields(cls)):
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(t for t in typing.get_args(hint) if t is not type(None))
        if hint is LoraConfig:
            continue
        out.update(_field_kinds(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint)
                   else {prefix + name: typing.get_origin(hint) or hint})
    return out


def _leaves(node: ConfigDict, prefix="") -> dict:
    out = {}
    for key in node.keys():
        value = node[key]
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, ConfigDict) else {prefix + key: value})
    return out


def _changed(value, kind):
    """(command-line text, parsed value) of another value of `kind` than `value`."""
    if kind is bool:
        return str(not value).lower(), not value
    if kind is tuple:
        new = (1, 2) if value is None else tuple(reversed(value)) + value[:1]
        return repr(new), new
    if kind is str:
        return value + "_x", value + "_x"
    new = (7 if value is None else value + 1) if kind is int else value * 2 + 0.5
    return repr(new), new


@pytest.mark.parametrize("spec, parts", [
    ("sft_edit:tiny", {"vit": VisionConfig, "agent": AgentConfig, "lora": LoraConfig}),
    ("detok_stage2", {"vit": VisionConfig, "detokenizer": DetokenizerConfig}),
])
def test_every_model_field_is_overridable_with_its_type(spec, parts):
    """Each field of each model dataclass is in config.model and one `--config.model.PATH=VALUE` sets it,
    parsed as the dataclass types it (ml_collections overrides only fields the ConfigDict holds)."""
    path = config_file(spec)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=["prog", "--config", path])
    values(["prog", "--config", path])
    model = values.config.model
    assert set(model.keys()) == set(parts)
    argv, want = ["prog", "--config", path], {}
    for part, cls in parts.items():
        leaves, kinds = _leaves(model[part]), _field_kinds(cls)
        assert set(leaves) == set(kinds), part
        for leaf, value in leaves.items():
            text, parsed = _changed(value, kinds[leaf])
            argv.append(f"--config.model.{part}.{leaf}={text}")
            want[f"{part}.{leaf}"] = parsed
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    got = _leaves(values.config.model)
    for leaf, parsed in want.items():
        assert got[leaf] == parsed and type(got[leaf]) is type(parsed), (leaf, got[leaf], parsed)


def test_overrides_reach_the_model_configs():
    path = config_file("detok_stage2:tiny")
    argv = ["prog", "--config", path, "--config.model.detokenizer.unet.block_out_channels=(16, 32, 32)",
            "--config.model.detokenizer.unet.norm_eps=1e-6", "--config.model.detokenizer.unet.scan_layers=false",
            "--config.model.vit.layers=3"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    cfgs = model_configs(values.config)
    unet = cfgs["detokenizer"].unet
    assert unet.block_out_channels == (16, 32, 32) and unet.norm_eps == 1e-6 and unet.scan_layers is False
    assert unet.in_channels == 8 and cfgs["vit"].layers == 3


def cli(module: str, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return dict(write_all(str(root)), root=root)


def test_train_takes_a_shipped_name_and_nested_overrides_from_another_directory(data):
    """From the data folder, with a relative tokenizer path: the LLM width reaches the model config,
    which the resamplers then do not fit: one line, exit 2, before anything compiles."""
    out = cli("seedx_jax.train", "--config", "sft_edit:tiny", "--workdir", "w", "--config.tokenizer=tokenizer/",
              "--config.mesh.num_devices=1", "--config.model.agent.llm.vocab_size=999",
              "--config.model.agent.llm.hidden_size=40", cwd=data["root"])
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "seedx_jax.train: error: config.model.agent.input_resampler.embed_dim=64 and config.model.agent."
        "output_resampler.kv_dim=64 must equal config.model.agent.llm.hidden_size=40"]


@pytest.mark.parametrize("module, prog", [("seedx_jax.train", "seedx_jax.train"), ("seedx_jax.preflight", "preflight")])
@pytest.mark.parametrize("args, message", [
    (["--config", "sft_edit:tiny", "--config.model.nope=1"], "--config.model.nope: no such field (config.model has no "
     "'nope')"),
    (["--config", "sft_edit:tiny", "--config.model.agent.llm.vocab_sise=1"],
     "--config.model.agent.llm.vocab_sise: no such field (config.model.agent.llm has no 'vocab_sise')"),
    (["--config", "sft_edit:tiny", "--config.train.steps=1.5"],
     "flag --config.train.steps=1.5: invalid literal for int() with base 10: '1.5'"),
    (["--config", "configs/sft_edit.py:tiny"], "--config configs/sft_edit.py:tiny: no such file, and no shipped "
     "config of that name (shipped: demo, detok_stage1, detok_stage2, pretrain, sft_comp_gen, sft_edit; e.g. "
     "--config sft_edit:tiny)"),
    (["--config=sft_edit:huge"], "sft_edit:huge: unknown variant; use --config sft_edit (full size) or --config "
     "sft_edit:tiny"),
    (["--config", "demo:sft"], "demo:sft: unknown stage; choose one of demo:detok_stage1, demo:detok_stage2, "
     "demo:sft_comp_gen, demo:sft_edit"),
])
def test_bad_config_input_is_one_line_and_exit_2(tmp_path, module, prog, args, message):
    out = cli(module, *args, *(["--workdir", "w"] if module == "seedx_jax.train" else []), cwd=tmp_path)
    assert (out.returncode, out.stderr.strip().splitlines(), out.stdout) == (2, [f"{prog}: error: {message}"], "")
    assert os.listdir(tmp_path) == []


def test_paths_in_a_config_resolve_against_the_working_directory(data, monkeypatch):
    """`~`, relative paths and trailing slashes, as typed in `--config.tokenizer=...` etc."""
    from seedx_jax.preflight import file_problems

    root = data["root"]
    monkeypatch.setenv("HOME", str(root.parent))
    monkeypatch.chdir(root)
    config = sft_edit.get_config("tiny")
    config.tokenizer = f"~/{root.name}/tokenizer/"
    config.data.sources.edit.update(paths="edit.jsonl", image_dir=f"~/{root.name}/img/")
    assert file_problems(config) == []
    tokenizer = load_tokenizer(config)
    mixture = build_data(config, tokenizer, model_configs(config)["vit"].image_size)
    mixture.batch_for(0)
    assert mixture.stats()["edit"].skipped == 0
