"""The notebooks (issue 9) run top to bottom in a Jupyter kernel on CPU with their tiny settings and
leave their outputs where they say (the kernel inherits conftest's 8 fake CPU devices). The shapes-demo
notebook (the quick demo end to end) is in the slow suite."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def execute(name: str, out, **env) -> nbformat.NotebookNode:
    """Runs notebooks/<name>.ipynb from notebooks/ (as Jupyter does) with SEEDX_NOTEBOOK_OUT=out."""
    path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    os.environ.update({"SEEDX_NOTEBOOK_OUT": str(out), "PYTHONPATH": ROOT, **env})
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


def printed(nb) -> str:
    return "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)


def test_quickstart_runs_every_flow_and_records_it(tmp_path):
    nb = execute("quickstart", tmp_path / "out")
    results = json.load(open(tmp_path / "out" / "results.json"))
    assert "tiny models" in printed(nb) and results["checkpoint"].endswith("tiny_models/seedx_i")
    assert results["comprehension"]["grid"] == [2, 1]  # the 448x224 scene on 224 px tiles
    assert {"text_to_image", "edit", "comprehension"} <= set(results)
    names = [os.path.basename(f) for f in results["files"]]
    assert "input.png" in names and "reconstruction.png" in names
    assert all(os.path.getsize(f) > 0 for f in results["files"])


def test_finetune_trains_lora_on_a_mesh_and_exports_the_adapter(tmp_path):
    out = tmp_path / "out"
    nb = execute("finetune_lora", out)
    text = printed(nb)
    assert "mesh: data=1 fsdp=8 tensor=1" in text and "memory:" in text  # the preflight ran on the 8 devices
    losses = [json.loads(line)["loss/loss"] for line in open(out / "run" / "metrics.jsonl")]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses  # 30 steps, logged every 5
    adapter = out / "export" / "adapter"
    config = json.load(open(adapter / "adapter_config.json"))
    assert config["peft_type"] == "LORA" and config["r"] == 8
    from safetensors.numpy import load_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in tensors.items() if "lora_B" in k]
    assert lora_b and all(abs(v).max() > 0 for v in lora_b)  # B starts at zero: these were trained


@pytest.mark.slow  # ~3 min: every stage of the demo compiles and trains
def test_shapes_demo_notebook_writes_the_report_and_loadable_models(tmp_path):
    """The quick demo through the notebook: every stage through the real training loop, the held-out
    evaluation and the report folder; the trained pipelines load back."""
    from seedx_jax.pipelines import SeedX

    out = tmp_path / "report"
    nb = execute("shapes_demo", out)
    assert "quick demo" in printed(nb)
    metrics = json.load(open(out / "metrics.json"))
    for key in ("vqa/accuracy", "grounding/mean_iou", "t2i/colour", "t2i/position", "edit/success",
                "reconstruction/psnr"):
        assert key in metrics
    page = open(out / "index.html").read()
    for stage in ("detok_stage1", "detok_stage2", "sft_comp_gen", "sft_edit", "standin_vae"):
        assert os.path.getsize(out / "curves" / f"{stage}.png") > 0
        assert f"curves/{stage}.png" in page
    assert any(f.startswith("text_to_image_") for f in os.listdir(out / "samples"))
    assert not [f for f in os.listdir(tmp_path) if ".partial-" in f]
    assert SeedX.load(str(out / "models" / "seedx_i")).renders_text_to_image
    assert SeedX.load(str(out / "models" / "seedx_edit")).detokenizer.config.edits
