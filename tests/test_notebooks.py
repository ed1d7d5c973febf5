"""The notebooks run top to bottom in a Jupyter kernel on CPU with their tiny settings, as a user runs
them: Jupyter started inside `notebooks/` (a copy of the folder here), no SEEDX_* environment variable
and no PYTHONPATH (seedx_jax and `configs` come from the installed package); outputs land where the
notebooks say, relative to that folder. The kernel inherits conftest's 8 fake CPU devices. In the slow
suite: a second quickstart run replacing the first one's outputs, and the shapes-demo notebook (the quick
demo end to end)."""
import json
import os
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def execute(name: str, home) -> tuple[nbformat.NotebookNode, str]:
    """Runs `<home>/notebooks/<name>.ipynb` (copied from the checkout) from its own folder, with the
    notebooks' settings unset -> (the executed notebook, that folder)."""
    folder = os.path.join(home, "notebooks")
    os.makedirs(folder, exist_ok=True)
    path = shutil.copy(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), folder)
    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("SEEDX_") or k == "PYTHONPATH"]:
        del os.environ[key]
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb, folder


def printed(nb) -> str:
    return "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def _quickstart(home) -> str:
    """Runs the quickstart notebook and checks its record -> its output folder."""
    nb, folder = execute("quickstart", home)
    out = os.path.join(folder, "outputs", "quickstart")
    results = json.load(open(os.path.join(out, "results.json")))
    assert "tiny models" in printed(nb) and results["checkpoint"] == "outputs/quickstart/tiny_models/seedx_i"
    assert results["comprehension"]["grid"] == [2, 1]  # the 448x224 scene on 224 px tiles
    assert {"text_to_image", "edit", "comprehension"} <= set(results)
    names = [os.path.basename(f) for f in results["files"]]
    assert "input.png" in names and "reconstruction.png" in names
    assert all(os.path.getsize(os.path.join(folder, f)) > 0 for f in results["files"])
    assert sorted(os.listdir(os.path.join(out, "tiny_models"))) == ["seedx_edit", "seedx_i"]
    return out


def test_quickstart_runs_every_flow_and_records_it(tmp_path):
    _quickstart(tmp_path)


@pytest.mark.slow  # ~45 s: the notebook twice
def test_a_second_quickstart_run_replaces_the_first_ones_outputs(tmp_path):
    _quickstart(tmp_path)
    _quickstart(tmp_path)


def test_finetune_trains_lora_on_a_mesh_and_exports_the_adapter(tmp_path):
    nb, folder = execute("finetune_lora", tmp_path)
    out = os.path.join(folder, "outputs", "finetune")
    text = printed(nb)
    assert "mesh: data=1 fsdp=8 tensor=1" in text and "memory:" in text  # the preflight ran on the 8 devices
    losses = [json.loads(line)["loss/loss"] for line in open(os.path.join(out, "run", "metrics.jsonl"))]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses  # 30 steps, logged every 5
    adapter = os.path.join(out, "export", "adapter")
    config = json.load(open(os.path.join(adapter, "adapter_config.json")))
    assert config["peft_type"] == "LORA" and config["r"] == 8
    from safetensors.numpy import load_file

    tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and all(abs(v).max() > 0 for v in lora_b)  # B starts at zero: these were trained


@pytest.mark.slow  # ~3 min: every stage of the demo compiles and trains
def test_shapes_demo_notebook_writes_the_report_and_loadable_models(tmp_path):
    """The quick demo through the notebook: every stage through the real training loop, the held-out
    evaluation and the report folder; the trained pipelines load back."""
    from seedx_jax.pipelines import SeedX

    nb, folder = execute("shapes_demo", tmp_path)
    out = os.path.join(folder, "outputs", "demo")
    assert "quick demo" in printed(nb)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for key in ("vqa/accuracy", "grounding/mean_iou", "t2i/colour", "t2i/position", "edit/success",
                "reconstruction/psnr"):
        assert key in metrics
    page = open(os.path.join(out, "index.html")).read()
    for stage in ("detok_stage1", "detok_stage2", "sft_comp_gen", "sft_edit", "standin_vae"):
        assert os.path.getsize(os.path.join(out, "curves", f"{stage}.png")) > 0
        assert f"curves/{stage}.png" in page
    assert any(f.startswith("text_to_image_") for f in os.listdir(os.path.join(out, "samples")))
    assert not [f for f in os.listdir(os.path.dirname(out)) if ".partial-" in f]
    assert SeedX.load(os.path.join(out, "models", "seedx_i")).renders_text_to_image
