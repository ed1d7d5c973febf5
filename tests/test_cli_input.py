"""`seedx-jax chat | generate | edit | reconstruct` refuse bad input before any weight loads, with one
line naming the input and the problem and exit 2 (sizes, noise files, inputs given twice, a chat without
a question; `convert` says what a wrong source is); follow the output policy for `--out` files (never
replace what an earlier run of ours did not write, keep inputs, leave no empty folder, respect the
umask); report an answer cut off by --max-new-tokens, non-finite values and running out of memory with
one line and exit 1 instead of writing a picture; progress in a log file is whole lines."""
import io
import json
import os
import pickle
import stat
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import save_pipeline
from seedx_jax.cli import main, out_of_memory
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.outputs import OutputError, check_target, write_marker
from seedx_jax.pipelines import SeedX, Turn
from seedx_jax.progress import Progress
from seedx_jax.vision.vit import QwenViT
from seedx_fixtures import script_agent, train_sp_model
from test_cli import FAST, ckpts  # noqa: F401 (the scripted tiny pipelines)


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a command loads weights: every check must come before."""
    def refuse(self, **kw):
        raise AssertionError("weights were loaded before the input was refused")
    monkeypatch.setattr(SeedX, "load_weights", refuse)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "a cat</s>"], "'</s>', the LLM's end-of-sequence token"),
    (["generate", "--prompt", "<s>"], "'<s>', the LLM's beginning-of-sequence token"),
    (["generate", "--prompt", "a <patch> cat"], "images are passed as images"),
    (["generate", "--prompt", ""], "caption is empty"),
    (["generate", "--prompt", "x", "--max-new-tokens", "10"], "cannot hold an image"),
    (["generate", "--prompt", "x", "--solver", "ddim", "--steps", "1000"], "ddim takes at most 999 steps"),
    (["generate", "--prompt", "x", "--steps", "1001"], "--steps 1001 must be in [1, 1000]"),
    (["generate", "--prompt", "x", "--steps", "0"], "--steps: 0 must be at least 1"),
    (["generate", "--prompt", "x", "--seed", "-1"], "--seed: -1 must be at least 0"),
    (["generate", "--prompt", "x", "--seed", str(2 ** 32)], "must be below 2**32"),
    (["generate", "--prompt", "x", "--temperature", "-0.5"], "temperature=-0.5 must be >= 0"),
    (["generate", "--prompt", "x", "--top-p", "0"], "top_p=0.0 must be in (0, 1]"),
    (["generate", "--prompt", "x", "--guidance-scale", "nan"], "'nan' is not a finite number"),
    (["generate", "--prompt", "x", "--width", "33"], "--width 33 must be a positive multiple"),
    (["generate", "--prompt", "x", "--max-new-tokens", "2000"], "exceeds the context of 1024"),
    (["chat", "--prompt", "hi", "--image", "{photo}", "--grounding", "--template", "seed_x", "--prompt", "</s>"],
     "question contains '</s>'"),
    (["chat", "--prompt", "where?", "--grounding"], "grounding needs an image"),
    (["edit", "--image", "{photo}", "--prompt", "x"], "editing needs a stage-2 de-tokenizer"),
    (["reconstruct", "--image", "{photo}", "--noise", "{nan_noise}"], "--noise {nan_noise}: array holds 1 NaN"),
    # sizes past SDXL's use would abort XLA (1048576) or exhaust any memory
    (["generate", "--prompt", "x", "--height", "1048576", "--width", "1048576"],
     "--height: 1048576 must be at most 4096"),
    (["reconstruct", "--image", "{photo}", "--width", "4104"], "--width: 4104 must be at most 4096"),
    # an input the command reads one of (or none of) is never dropped silently
    (["edit", "--image", "{photo}", "--image", "{photo}", "--prompt", "x"], "edit takes one --image (given again"),
    (["generate", "--prompt", "x", "--prompt", "y"], "generate takes one --prompt (given again: y)"),
    (["generate", "--prompt", "x", "--image", "{photo}"], "generate takes no --image: it draws from the caption"),
    (["chat", "--prompt", "hi", "--checkpoint", "{photo}"], "chat takes one --checkpoint"),
    (["generate", "--prompt", "x", "--name", ""], "--name: an empty name; leave --name out"),
    (["generate", "--prompt", "x", "--name", "  "], "--name: an empty name; leave --name out"),
    (["chat", "--prompt", "hi", "--image", "{folder}"], "folder: a directory, not an image file"),
])
def test_bad_input_is_refused_before_the_weights_load(ckpts, tmp_path, capsys, no_weights, argv, message):  # noqa: F811
    noise = np.zeros((1, 16, 16, 4), np.float32)
    noise[0, 3, 3, 1] = np.nan
    np.save(tmp_path / "nan.npy", noise)
    (tmp_path / "folder").mkdir()
    names = dict(photo=ckpts / "photo.png", nan_noise=tmp_path / "nan.npy", folder=tmp_path / "folder")
    argv, message = [a.format(**names) for a in argv], message.format(**names)
    rc = main([argv[0], "--checkpoint", str(ckpts / "stage1"), "--out", str(tmp_path / "out"), *FAST, *argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def _generate(ckpts, out, *extra):  # noqa: F811
    return main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompt", "a red cube", "--out", str(out),
                 *FAST, *map(str, extra)])


def test_an_earlier_run_is_replaced_only_with_overwrite(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    assert _generate(ckpts, "outputs", "--seed", "1") == 0  # relative --out, created
    first = np.asarray(Image.open("outputs/generate.png"))
    assert _generate(ckpts, "outputs", "--seed", "2") == 2
    assert "generate.json holds an earlier run; pass --overwrite" in capsys.readouterr().err
    assert (np.asarray(Image.open("outputs/generate.png")) == first).all()
    assert _generate(ckpts, "outputs", "--seed", "2", "--overwrite") == 0
    assert json.load(open("outputs/generate.json"))["seed"] == 2
    assert sorted(os.listdir("outputs")) == ["generate.json", "generate.png"]


def test_files_we_did_not_write_are_never_replaced(ckpts, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "album"
    out.mkdir()
    (out / "generate.png").write_bytes(b"the user's own picture")
    for flags in ((), ("--overwrite",)):
        assert _generate(ckpts, out, *flags) == 2
        assert "generate.png exists and is not a recorded output" in capsys.readouterr().err
    assert (out / "generate.png").read_bytes() == b"the user's own picture"
    # an input image is never an output, even with --overwrite
    Image.open(ckpts / "photo.png").save(out / "edit.png")
    rc = main(["reconstruct", "--checkpoint", str(ckpts / "stage1"), "--image", str(out / "edit.png"),
               "--out", str(out), "--name", "edit", "--overwrite", *FAST])
    assert rc == 2 and "exists and is not a recorded output" in capsys.readouterr().err
    # --out inside the checkpoint, or a file
    assert _generate(ckpts, ckpts / "stage1" / "out") == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert _generate(ckpts, out / "generate.png") == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_outputs_respect_the_umask(ckpts, tmp_path):  # noqa: F811
    old = os.umask(0o022)
    try:
        assert _generate(ckpts, tmp_path / "new" / "out") == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "new", tmp_path / "new" / "out"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    for name in ("generate.png", "generate.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "new" / "out" / name).st_mode) == 0o644


@pytest.fixture(scope="module")
def late_image(tmp_path_factory):
    """A pipeline whose answer is one word, then an image: `<box_end> <img> [64] </img> </s>`."""
    root = tmp_path_factory.mktemp("late")
    tok = SeedXTokenizer(train_sp_model(str(root / "sp.model")))
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(1))
    script_agent(agent, tok, {"\n": T.BOX_END, T.BOX_END: T.IMG_START, T.IMG_END: "</s>"})
    save_pipeline(str(root / "pipe"), tokenizer=tok, vit=QwenViT(TINY_VISION, rngs=nnx.Rngs(0)), agent=agent,
                  detokenizer=Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(2)), template="seed_x_i")
    return root / "pipe"


def test_an_image_cut_off_by_max_new_tokens_is_said_so(late_image, tmp_path, capsys):
    argv = ["generate", "--checkpoint", str(late_image), "--prompt", "a cat", "--out", str(tmp_path / "o"), *FAST]
    assert main(argv + ["--max-new-tokens", "66"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("seedx-jax generate: --max-new-tokens 66 ended the answer inside its image after 66 tokens; "
                       "raise it (the image span alone takes 66); nothing written"), err
    assert not (tmp_path / "o").exists()
    assert main(argv + ["--max-new-tokens", "68"]) == 0  # word + 66 + </s>


def test_non_finite_images_are_reported_not_written(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    from seedx_jax.detokenizer import model as detok_model

    original = detok_model.Detokenizer.generate
    monkeypatch.setattr(detok_model.Detokenizer, "generate", lambda self, *a, **kw: original(self, *a, **kw) * np.nan)
    assert _generate(ckpts, tmp_path / "o") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "the de-tokenizer's output image holds 3072 NaN" in err[-1] and err[-1].endswith("nothing written"), err
    assert not (tmp_path / "o").exists()


def _npy(array: np.ndarray, **kw) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kw)
    return buffer.getvalue()


NOISE_FILES = {  # name: (content, the problem said)
    "empty.npy": (b"", "not a .npy array (an empty file)"),
    "garbage.npy": (b"not numpy at all", "not a .npy array (no NumPy header)"),
    "pickled.npy": (pickle.dumps(np.zeros((1, 16, 16, 4), np.float32)), "not a .npy array (a pickle)"),
    "arrays.npz": (None, "not a .npy array (a zip archive, such as .npz)"),
    "ints.npy": (_npy(np.zeros((1, 16, 16, 4), np.int64)), "holds int64 values; the noise must be floating-point"),
    "strings.npy": (_npy(np.array(["1.5"])), "holds <U3 values; the noise must be floating-point"),
    "objects.npy": (_npy(np.array([{}], dtype=object), allow_pickle=True), "not a readable .npy array"),
    "truncated.npy": (_npy(np.zeros((1, 16, 16, 4), np.float32))[:-10], "not a readable .npy array"),
    "folder": (None, "cannot read it (Is a directory)"),
    "/dev/null": (None, "not a .npy array (an empty file)"),
}


@pytest.mark.parametrize("name", list(NOISE_FILES))
def test_a_noise_file_that_is_not_a_float_npy_array_is_refused(ckpts, tmp_path, capsys, no_weights, name):  # noqa: F811
    content, problem = NOISE_FILES[name]
    path = tmp_path / name
    if name == "arrays.npz":
        np.savez(path, noise=np.zeros((1, 16, 16, 4), np.float32))
    elif name == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    path = name if name.startswith("/") else str(path)
    rc = main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompt", "x", "--noise", path,
               "--out", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"seedx-jax generate: error: --noise {path}: {problem}"), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stdin", ["", "\n  \n"])
def test_a_chat_without_any_question_is_refused(ckpts, tmp_path, capsys, monkeypatch, no_weights, stdin):  # noqa: F811
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(["chat", "--checkpoint", str(ckpts / "stage1"), "--image", str(ckpts / "photo.png"),
               "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2 and capsys.readouterr().err.strip() == (
        "seedx-jax chat: error: no question: give --prompt, or one question per line on stdin (it held none)")
    assert not (tmp_path / "out").exists()


def test_an_image_that_is_a_folder_is_the_problem_named(ckpts, tmp_path, capsys, monkeypatch, no_weights):  # noqa: F811
    """`--image .` with the default --out outputs: the image is the mistake, not where outputs go."""
    monkeypatch.chdir(tmp_path)
    assert main(["chat", "--checkpoint", str(ckpts / "stage1"), "--image", ".", "--prompt", "hi", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == "seedx-jax chat: error: .: a directory, not an image file"
    assert os.listdir(tmp_path) == []


def test_convert_says_what_a_source_of_the_wrong_kind_is(ckpts, tmp_path, capsys):  # noqa: F811
    photo = ckpts / "photo.png"
    (tmp_path / "object.pkl").write_bytes(pickle.dumps(types.SimpleNamespace(weights=[1.0]), protocol=4))
    for argv, line in [
        (["release", photo], f"seedx-jax convert release: error: {photo} is a file, not a release directory"),
        (["vit", photo], f"seedx-jax convert vit: error: {photo}: not a PyTorch checkpoint (neither a torch zip file "
                         "nor a torch pickle)"),
        (["vit", tmp_path / "object.pkl"], f"seedx-jax convert vit: error: {tmp_path / 'object.pkl'}: not a PyTorch "
                                           "state dict of tensors: the safe loader refused it ("),
    ]:
        assert main(["convert", *map(str, argv), "--out", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line) and err[0].endswith(")"), err
    (tmp_path / "empty_release").mkdir()
    assert main(["convert", "release", str(tmp_path / "empty_release"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("is not a SEED-X release tree: it lacks QwenViT/qwen_vit_G.pt, "
                                                    "a tokenizer folder, a seed_x*/agent checkpoint")
    assert not (tmp_path / "out").exists()


def test_an_output_refusal_names_the_option_of_its_interface(ckpts, tmp_path, capsys):  # noqa: F811
    for kind in ("vit", "agent", "export"):
        (tmp_path / kind).mkdir()
        write_marker(str(tmp_path / kind), kind)
    photo = str(ckpts / "photo.png")
    assert main(["convert", "vit", photo, "--out", str(tmp_path / "vit"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("vit already holds a vit output; pass --overwrite to replace it")
    assert main(["convert", "vit", photo, "--out", str(tmp_path / "agent"), "--quiet"]) == 2
    assert "agent holds an agent output, not a vit; choose another folder" in capsys.readouterr().err
    with pytest.raises(OutputError, match="holds an export output, not an agent"):
        check_target(str(tmp_path / "export"), "agent")
    with pytest.raises(OutputError, match=r"already holds a vit output; pass overwrite=True to replace it"):
        check_target(str(tmp_path / "vit"), "vit", name="save_model path")


def test_help_and_an_unknown_command_list_every_command(capsys):
    assert main(["--help"]) == 0
    assert "{chat,generate,edit,reconstruct,convert,export,eval,serve}" in capsys.readouterr().out
    assert main(["bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'reconstruct', 'convert', 'export', 'eval', 'serve')" in err[0], err


def _out_of_memory(*args, **kwargs):
    raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4294967296 bytes.")


def test_running_out_of_memory_while_drawing_is_one_line(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    """Stand-ins for the models (no weights load): chat answers with an image, and the de-tokenizer runs
    out of memory inside SeedX's own rendering stage. The answer printed stays printed."""
    def stand_ins(self, **kw):
        self.agent, self._negative = object(), np.zeros((1, 64, 16), np.float32)
        self.detokenizer = types.SimpleNamespace(generate=_out_of_memory)
        return self

    answer = Turn("a cat", "a cat <img></img>", [], np.zeros((1, 64, 16), np.float32), [1])
    monkeypatch.setattr(SeedX, "load_weights", stand_ins)
    monkeypatch.setattr(SeedX, "chat", lambda self, *a, **kw: (answer, None))
    rc = main(["chat", "--checkpoint", str(ckpts / "stage1"), "--prompt", "draw a cat", "--out", str(tmp_path / "o"),
               *FAST])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "a cat\n"
    assert err.strip().splitlines() == [
        f"seedx-jax chat: out of {jax.default_backend().upper()} memory rendering 1 image(s) at 32x32, 2 steps "
        "(allocating 4.00 GiB); try a smaller --height/--width; nothing written"]
    assert not (tmp_path / "o").exists()


def test_weights_larger_than_memory_are_one_line(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    def too_large(self, **kw):
        raise MemoryError()

    monkeypatch.setattr(SeedX, "load_weights", too_large)
    checkpoint = str(ckpts / "stage1")
    assert main(["generate", "--checkpoint", checkpoint, "--prompt", "x", "--out", str(tmp_path / "o"), *FAST]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"seedx-jax generate: out of host memory loading the weights of {checkpoint}; the weights need a machine "
        "with more memory (or a --dtype bfloat16 conversion); nothing written"]
    # only memory: any other runtime error is not for this line
    assert out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: a bug")) is None
    assert out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: not from XLA")) is None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_counters_in_a_log_are_a_few_whole_lines():
    """A log gets about one line per tenth of a count and its last step, no `\\r`; a terminal's counter
    rewrites its line."""
    for stream in (io.StringIO(), _Terminal()):
        progress = Progress(stream)
        with progress.stage("converting"):
            for i in range(1, 652):
                progress.step(i, 651, "units")
        with progress.stage("generating"):
            for i in range(0, 100, 16):  # reported every 16 tokens, ended early by </s>
                progress.step(i, 512, "tokens")
        text = stream.getvalue()
        if isinstance(stream, _Terminal):
            assert "\r  units: 2/651\r  units: 3/651" in text
            continue
        lines = text.splitlines()
        units = [line for line in lines if "units" in line]
        assert "\r" not in text and len(units) <= 11 and units[-1] == "  units: 651/651", lines
        assert [line for line in lines if "tokens" in line][-1] == "  tokens: 96/512"
        assert lines[-1].startswith("generating: done in")
