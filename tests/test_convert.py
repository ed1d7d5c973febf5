"""The weight converter end to end: tiny PyTorch models in the released key layout and file formats
(torch statement ViT, transformers Llama, peft LoRA, diffusers U-Net/VAE) -> `seedx-jax convert` ->
`load_model` -> outputs vs PyTorch; export back bit-identical; mesh changes; damaged inputs.

Tolerance: max |diff| <= 1e-4 x max |reference| (fp32; bf16/fp16 sources compared against the torch
model holding the same rounded weights).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import LlamaForCausalLM as HFLlama

from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import load_model, read_manifest
from seedx_jax.cli import main as seedx_jax_command
from seedx_jax.convert.cli import main as convert
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.pipelines import SeedX
from seedx_jax.sharding import make_mesh
from parity import max_rel_diff, randomize_
from release_fixture import save_llm_folder, torch_state, write_sft_agent, write_tiny_release
from seedx_fixtures import TorchAgent
from test_agent import batch, reference
from test_unet import inputs as unet_inputs
from test_unet import reference as unet_reference
from torch_vision import TorchQwenViT

TOL = 1e-4
VIT = TINY_VISION  # the ViT the tiny agent reads
AGENT = AgentConfig.preset("tiny")
DETOK = DetokenizerConfig.preset("tiny_edit")


def run(*argv) -> int:
    return convert([*map(str, argv), "--quiet"])


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny SEED-X release tree (docs/release_tree.md) and the torch models it was written from."""
    root = tmp_path_factory.mktemp("release")
    (root.parent / "vit.json").write_text(json.dumps(VIT.to_dict()))
    return write_tiny_release(root, vit=VIT, agent=AGENT, detokenizer=DETOK)


def vit_features(model, seed=0):
    images = np.random.default_rng(seed).normal(size=(2, 224, 224, 3)).astype(np.float32)
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return model(torch.tensor(images).permute(0, 3, 1, 2)).numpy()
    return np.asarray(model(jnp.asarray(images)))


def agent_logits(model, seed=0):
    b = batch(AGENT, seed)
    if isinstance(model, torch.nn.Module):
        return reference(model, b)[0]
    return np.asarray(model(**{k: jnp.asarray(v) for k, v in b.items()}).logits)


def assert_round_trip(source: dict, exported: dict) -> None:
    assert set(source) <= set(exported), sorted(set(source) - set(exported))[:3]
    for key, want in source.items():
        got = exported[key]
        assert got.dtype == want.dtype and torch.equal(got, want), key


def load_folder_state(folder) -> dict:
    from safetensors.torch import load_file
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, f)))
    return out


# --------------------------------------------------------------------------------------------------


def test_vit_file_converts_matches_torch_and_exports_bit_identical(release, tmp_path):
    source = release["root"] / "QwenViT" / "qwen_vit_G.pt"
    assert run("vit", source, "--out", tmp_path / "vit", "--config", release["root"].parent / "vit.json") == 0
    ours = load_model(str(tmp_path / "vit"), "vit")
    assert max_rel_diff(vit_features(ours), vit_features(release["vit"])) <= TOL
    manifest = read_manifest(str(tmp_path / "vit"))
    digest = manifest["source"]["files"][str(source)]["sha256"]
    assert len(digest) == 64 and manifest["source"]["options"]["config"].endswith("vit.json")
    assert run("export", tmp_path / "vit", "--out", tmp_path / "exported") == 0
    assert_round_trip(torch.load(source), torch.load(tmp_path / "exported" / "qwen_vit_G.pt"))


def test_qwen_vl_chat_bf16_safetensors_converts(release, tmp_path):
    """The ViT inside a Qwen-VL-Chat checkpoint (prefix transformer.visual., beside LLM keys), in bf16."""
    from safetensors.torch import save_file
    vit = release["vit"]
    state = {"transformer.visual." + k: v.to(torch.bfloat16) for k, v in torch_state(vit).items()}
    state["transformer.h.0.attn.c_attn.weight"] = torch.zeros(3, 3, dtype=torch.bfloat16)
    os.makedirs(tmp_path / "qwen_vl_chat")
    save_file(state, tmp_path / "qwen_vl_chat" / "model.safetensors")
    assert run("vit", tmp_path / "qwen_vl_chat", "--out", tmp_path / "vit", "--strict",
               "--config", release["root"].parent / "vit.json") == 0
    rounded = randomize_(TorchQwenViT(VIT))
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in torch_state(vit).items()})
    assert max_rel_diff(vit_features(load_model(str(tmp_path / "vit"))), vit_features(rounded)) <= TOL


@pytest.mark.parametrize("form", ["sharded_fp16_safetensors", "bin"])
def test_llama_folder_converts_and_round_trips(release, tmp_path, form):
    hf = release["agents"]["seed_x_i"].llm
    dtype = torch.float16 if form.startswith("sharded") else torch.float32
    save_llm_folder(hf, tmp_path / "llm", bin_file=form == "bin", dtype=dtype)
    if form.startswith("sharded"):
        assert os.path.isfile(tmp_path / "llm" / "model.safetensors.index.json")
    assert run("llama", tmp_path / "llm", "--out", tmp_path / "ckpt") == 0
    ours = load_model(str(tmp_path / "ckpt"), "llama")
    ref = HFLlama.from_pretrained(tmp_path / "llm", torch_dtype=torch.float32).eval()
    ids = np.random.default_rng(0).integers(0, AGENT.llm.vocab_size, (2, 11))
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    assert max_rel_diff(ours(jnp.asarray(ids)).logits, want) <= TOL
    assert run("export", tmp_path / "ckpt", "--out", tmp_path / "hf", "--max-shard-mb", "1") == 0
    source = {k: v for k, v in torch_state(HFLlama.from_pretrained(tmp_path / "llm", torch_dtype=dtype)).items()}
    assert_round_trip(source, load_folder_state(tmp_path / "hf"))


def test_agent_release_form_converts_and_round_trips(release, tmp_path):
    root = release["root"] / "seed_x_i"
    assert run("agent", root / "agent" / "pytorch_model.bin", "--llm", root / "llm", "--out", tmp_path / "agent",
               "--config", "tiny", "--strict") == 0
    ours = load_model(str(tmp_path / "agent"), "agent")
    assert max_rel_diff(agent_logits(ours), agent_logits(release["agents"]["seed_x_i"])) <= TOL
    assert run("export", tmp_path / "agent", "--out", tmp_path / "exported") == 0
    assert_round_trip(torch.load(root / "agent" / "pytorch_model.bin"),
                      torch.load(tmp_path / "exported" / "agent" / "pytorch_model.bin"))
    assert_round_trip(load_folder_state(root / "llm"), load_folder_state(tmp_path / "exported" / "llm"))


@pytest.fixture(scope="module")
def peft_agent(release, tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "pytorch_model.bin"
    return write_sft_agent(path, AGENT), path


@pytest.mark.parametrize("merge", [False, True], ids=["lora_kept", "lora_merged"])
def test_agent_peft_form_keeps_or_merges_lora(peft_agent, tmp_path, merge):
    agent, path = peft_agent
    out = tmp_path / "agent"
    assert run("agent", path, "--out", out, "--config", "tiny", "--lora-alpha", 8,
               *(["--merge-lora"] if merge else [])) == 0
    ours = load_model(str(out), "agent")
    assert (ours.config.llm.lora is None) == merge
    want = agent_logits(agent)
    assert max_rel_diff(agent_logits(ours), want) <= TOL
    if merge:
        return
    # export: llm/ folder + PEFT adapter folder that peft itself loads back to the same logits
    assert run("export", out, "--out", tmp_path / "exported") == 0
    adapter = tmp_path / "exported" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"] == 8.0
    base = HFLlama.from_pretrained(tmp_path / "exported" / "llm", torch_dtype=torch.float32)
    rebuilt = TorchAgent(AGENT, seed=3).float()
    rebuilt.load_state_dict(torch.load(tmp_path / "exported" / "agent" / "pytorch_model.bin"), strict=False)
    rebuilt.llm = PeftModel.from_pretrained(base, adapter).eval()
    assert max_rel_diff(agent_logits(rebuilt.eval()), want) <= TOL


def test_detokenizer_stage2_over_sdxl_folder(release, tmp_path):
    root = release["root"]
    assert run("detokenizer", root / "seed_detokenizer" / "second_stage" / "pytorch_model.bin",
               "--sdxl", root / "stable-diffusion-xl-base-1.0", "--out", tmp_path / "detok", "--config", "tiny",
               "--strict") == 0
    ours = load_model(str(tmp_path / "detok"), "detokenizer")
    options = read_manifest(str(tmp_path / "detok"))["source"]["options"]
    assert ours.config.edits and options["stage"] == 2 and options["scheduler"]["differs_from_samplers"] == []
    x = unet_inputs(ours.config.unet)
    assert max_rel_diff(ours.unet(**{k: jnp.asarray(v) for k, v in x.items()}),
                        unet_reference(release["unets"][2], x)) <= TOL
    feats = np.random.default_rng(0).normal(size=(2, 6, DETOK.resampler.embedding_dim)).astype(np.float32)
    with torch.no_grad():
        want = release["resampler"](torch.tensor(feats))
    for got, ref in zip(ours.resampler(jnp.asarray(feats)), want):
        assert max_rel_diff(got, ref.numpy()) <= TOL
    z = np.random.default_rng(1).normal(size=(1, 8, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = release["vae"].decode(torch.tensor(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1).numpy()
    assert max_rel_diff(ours.vae.decode(jnp.asarray(z)), want) <= TOL
    assert run("export", tmp_path / "detok", "--out", tmp_path / "exported") == 0
    assert_round_trip(torch.load(root / "seed_detokenizer" / "second_stage" / "pytorch_model.bin"),
                      torch.load(tmp_path / "exported" / "pytorch_model.bin"))
    assert_round_trip(torch_state(release["vae"]), load_folder_state(tmp_path / "exported" / "vae"))


def test_tokenizer_folder_converts(release, tmp_path):
    folder = release["root"] / "cvlm_llama2_tokenizer_100img_and_224loc_addpatch"
    assert run("tokenizer", folder, "--out", tmp_path / "tok") == 0
    text = "<img><img_00003></img> a red car<box_start><loc-7>"
    ours, want = SeedXTokenizer.from_dir(str(tmp_path / "tok")), SeedXTokenizer.from_dir(str(folder))
    assert ours.encode(text) == want.encode(text) and ours.vocab_size == 650


@pytest.mark.slow  # the default suite converts a release tree in test_convert_configs (no --config) and README.md
def test_whole_release_tree_in_one_call(release, tmp_path):
    out = tmp_path / "seedx"
    assert seedx_jax_command(["convert", "release", str(release["root"]), "--out", str(out), "--quiet",
                              "--config", f"vit={release['root'].parent / 'vit.json'}", "--config", "agent=tiny",
                              "--config", "detokenizer=tiny"]) == 0
    assert sorted(os.listdir(out)) == ["detokenizer_stage1", "detokenizer_stage2", "release.json", "seed_x_edit",
                                       "seed_x_i", "tokenizer", "vit"]
    for name, stage in (("seed_x_i", 1), ("seed_x_edit", 2)):
        pipe = SeedX.load(str(out / name))
        assert pipe.template.name == name and pipe.detokenizer.config.edits == (stage == 2)
        assert max_rel_diff(agent_logits(pipe.agent), agent_logits(release["agents"][name])) <= TOL
    assert max_rel_diff(vit_features(pipe.vit), vit_features(release["vit"])) <= TOL


@pytest.mark.slow  # test_checkpoint's 8 -> 4 -> 1 device restore stays in the default suite
def test_checkpoint_converted_on_8_devices_loads_on_4_and_1(release, tmp_path, monkeypatch):
    from seedx_jax.convert import stream
    monkeypatch.setattr(stream, "HOST_STACK_BYTES", 0)  # every stacked row goes straight onto the mesh
    root = release["root"] / "seed_x_i"
    assert run("agent", root / "agent" / "pytorch_model.bin", "--llm", root / "llm", "--out", tmp_path / "agent",
               "--config", "tiny", "--mesh", "fsdp=4,tensor=2") == 0
    results = []
    for n, mesh_cfg in ((4, {"fsdp": 2, "tensor": 2}), (1, {})):
        mesh = make_mesh(mesh_cfg, jax.devices()[:n])
        model = load_model(str(tmp_path / "agent"), "agent", mesh=mesh)
        assert len(model.llm.layers.mlp.up_proj.kernel[...].sharding.device_set) == n
        with jax.set_mesh(mesh):
            results.append(agent_logits(model))
    assert max_rel_diff(results[0], results[1]) <= 1e-6
    assert max_rel_diff(results[1], agent_logits(release["agents"]["seed_x_i"])) <= TOL


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("damage, message", [
    ("truncated_safetensors", "truncated"),
    ("truncated_bin", "cannot read"),
    ("wrong_kind", "holds a vit checkpoint, not a SEED-X agent"),
    ("missing_key", "missing parameter: patch_pos_embed"),
    ("wrong_shape", "shape mismatch: input_resampler.query"),
])
def test_damaged_inputs_give_the_report_and_no_output(release, tmp_path, capsys, damage, message):
    src = tmp_path / "src"
    shutil.copytree(release["root"] / "seed_x_i", src)
    agent_file = src / "agent" / "pytorch_model.bin"
    if damage == "truncated_safetensors":
        _truncate(next(p for p in (src / "llm").iterdir() if p.suffix == ".safetensors"))
    elif damage == "truncated_bin":
        _truncate(agent_file)
    elif damage == "wrong_kind":
        shutil.copy(release["root"] / "QwenViT" / "qwen_vit_G.pt", agent_file)
    else:
        state = torch.load(agent_file)
        if damage == "missing_key":
            del state["patch_pos_embed"]
        else:
            state["input_resampler.query"] = state["input_resampler.query"][:-1]
            state["vision.extra"] = torch.zeros(2)  # listed, not fatal without --strict
        torch.save(state, agent_file)
    out = tmp_path / "out" / "agent"
    assert run("agent", agent_file, "--llm", src / "llm", "--out", out, "--config", "tiny") == 2
    err = capsys.readouterr().err
    assert err.startswith("seedx-jax convert agent: error:") and message in err, err
    if damage == "wrong_shape":  # one report: the mismatch once (not also as missing), the skipped key
        assert "missing parameter" not in err and "(skipped; fatal with strict): vision.extra" in err
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_interrupted_conversion_leaves_nothing(release, tmp_path, monkeypatch):
    from seedx_jax.sources import TorchFile
    reads = []

    def interrupt(self, key):
        reads.append(key)
        if len(reads) == 20:
            raise KeyboardInterrupt
        return original(self, key)

    original = TorchFile.read
    monkeypatch.setattr(TorchFile, "read", interrupt)
    rc = run("vit", release["root"] / "QwenViT" / "qwen_vit_G.pt", "--out", tmp_path / "vit", "--config",
             release["root"].parent / "vit.json", "--flush-mb", 0)
    assert rc == 130 and len(reads) == 20  # Ctrl-C: one line, exit 130 (tests/test_data_loss.py: the line)
    assert os.listdir(tmp_path) == []
