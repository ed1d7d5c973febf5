"""`seedx-jax serve` on tiny scripted pipelines (tests/serve_fixtures.py): the web app in headless
Chromium (Debian's package, driven by Playwright), Gradio's client API and the HTTP JSON API, each
against the Python API on the same checkpoints, and bad input through every door."""
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import serve_fixtures as sf
from processes import interruptible
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.cli import main

QUESTION = "What is in the picture?"
SAMPLER = SamplerConfig(num_steps=sf.RENDER.steps, guidance_scale=sf.RENDER.guidance_scale)
RENDER_ARGS = (2, 3.0, 1.5)  # steps, guidance, image guidance: the client API's sampler fields


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = sf.start(str(tmp_path_factory.mktemp("serve")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(served):
    """The Python API: the `SeedX` pipelines the server holds (their compiled programs are shared, and the
    requests below go through the server's queue, checks and encodings to reach them)."""
    return served.service.chat_pipe, served.service.edit_pipe


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads")
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "empty.png").write_bytes(b"")
    Image.new("RGB", (7072, 7072), (90, 120, 200)).save(root / "huge.png")  # 50 MP, 160 KB
    return root


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def pixels_of(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def post(served, route: str, body: dict) -> httpx.Response:
    return httpx.post(f"{served.url}/api/v1/{route}", json=body, timeout=300)


# -- the APIs against the Python API ---------------------------------------------------------------

def test_chat_over_http_and_the_gradio_client_gives_the_python_apis_ids(served, api):
    turn, _ = api[0].chat(QUESTION, [served.image_path], seed=3, max_new_tokens=32)
    assert turn.text == "cat" and not len(turn.image_features)
    response = post(served, "chat", {"question": QUESTION, "images": [b64(served.image_path)], "seed": 3,
                                     "max_new_tokens": 32})
    assert response.status_code == 200, response.text
    assert response.json()["token_ids"] == turn.token_ids and response.json()["text"] == "cat"
    client = Client(served.url, verbose=False)
    _, history, details = client.predict({"text": QUESTION, "files": [handle_file(served.image_path)]}, [], False,
                                         False, 32, *RENDER_ARGS, 3, 32, 32, "euler", api_name="/chat")
    assert details["token_ids"] == turn.token_ids
    assert history[-1]["role"] == "assistant"


def test_forced_text_to_image_gives_the_python_apis_pixels_through_both_apis(served, api):
    turn, expected = api[0].generate_image("a cat", force_image=True, height=32, width=32, sampler=SAMPLER, seed=7)
    assert expected is not None and expected.std() > 0
    body = {"prompt": "a cat", "force_image": True, "seed": 7}
    response = post(served, "text_to_image", body)
    assert response.status_code == 200, response.text
    assert response.json()["token_ids"] == turn.token_ids
    np.testing.assert_array_equal(pixels_of(response.json()["images"][0]), expected)
    client = Client(served.url, verbose=False)
    image, _, details = client.predict("a cat", True, 120, *RENDER_ARGS, 7, 32, 32, "euler",
                                       api_name="/text_to_image")
    np.testing.assert_array_equal(np.asarray(Image.open(image).convert("RGB")), expected)
    unforced = post(served, "text_to_image", {"prompt": "a cat", "seed": 7}).json()
    assert unforced["images"] == [] and "force" in unforced["note"]  # the scripted model answers in text


def test_edit_and_reconstruct_over_http_give_the_python_apis_pixels(served, api):
    _, expected = api[1].edit(served.image_path, "make it blue", height=32, width=32, sampler=SAMPLER, seed=5)
    response = post(served, "edit", {"image": b64(served.image_path), "instruction": "make it blue", "seed": 5})
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(pixels_of(response.json()["images"][0]), expected)
    expected = api[0].reconstruct(served.image_path, height=32, width=32, sampler=SAMPLER, seed=5)
    response = post(served, "reconstruct", {"image": b64(served.image_path), "seed": 5})
    np.testing.assert_array_equal(pixels_of(response.json()["image"]), expected)


def test_concurrent_requests_wait_their_turn(served):
    results = [None] * 3

    def ask(i):
        results[i] = post(served, "chat", {"question": QUESTION, "seed": i})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 3
    assert {r.json()["text"] for r in results} == {"cat"}


# -- bad input -------------------------------------------------------------------------------------

BAD_HTTP = [
    ("chat", {"question": QUESTION, "images": ["broken"]}, "images[0]: not base64"),
    ("chat", {"question": QUESTION, "images": [""]}, "images[0]: an empty file"),
    ("chat", {"question": QUESTION, "images": [base64.b64encode(b"not a png").decode()]}, "images[0]: not a recognised"),
    ("chat", {"question": ""}, "question is empty"),
    ("chat", {"question": "What is <img> here?"}, "'<img>'"),
    ("chat", {"question": QUESTION, "seed": 2 ** 32}, "seed: 4294967296 is outside"),
    ("chat", {"question": QUESTION, "seed": "one"}, "seed:"),
    ("chat", {"question": QUESTION, "max_new_tokens": 0}, "max_new_tokens: 0 is outside"),
    ("chat", {"question": QUESTION, "grounding": True}, "grounding needs an image"),
    ("chat", {"question": QUESTION, "colour": "red"}, "colour: Extra inputs"),
    ("chat", {}, "question: Field required"),
    ("text_to_image", {"prompt": "a cat", "height": 36}, "height: 36 is not a multiple of"),
    ("text_to_image", {"prompt": "a cat", "width": 8192}, "width: 8192 is outside"),
    ("text_to_image", {"prompt": "a cat", "steps": 1000}, "steps: 1000 is outside"),
    ("text_to_image", {"prompt": "a cat", "solver": "magic"}, "solver: 'magic' is not one of"),
    ("text_to_image", {"prompt": "a cat", "guidance_scale": -1}, "guidance_scale: -1.0 is outside"),
    ("edit", {"image": "", "instruction": "make it blue"}, "image: an empty file"),
]


@pytest.mark.parametrize("route, body, message", BAD_HTTP, ids=[m for _, _, m in BAD_HTTP])
def test_bad_http_requests_are_one_line_400s(served, route, body, message):
    response = post(served, route, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error and "\n" not in error


def test_a_50_megapixel_upload_is_refused_and_the_server_keeps_serving(served, files):
    response = post(served, "chat", {"question": QUESTION, "images": [b64(files / "huge.png")]})
    assert response.status_code == 400 and "50013184 pixels exceeds" in response.json()["error"]
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:  # a 1 GiB body announced, none sent
        s.sendall(b"POST /api/v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1073741824\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 413")
    assert post(served, "chat", {"question": QUESTION}).status_code == 200


def test_the_server_gives_out_no_file_outside_its_own_folder(served, tmp_path):
    for path in ("/etc/passwd", served.image_path, served.chat_path + "/seedx.json"):
        assert httpx.get(f"{served.url}/gradio_api/file={path}").status_code in (403, 404)
    assert os.environ["GRADIO_TEMP_DIR"].startswith(served.own)
    secret = sf.photo(str(tmp_path / "secret.png"), seed=9)  # a client names a file of the host as its upload
    call = httpx.post(f"{served.url}/gradio_api/call/reconstruct", timeout=60, json={"data": [
        {"path": secret, "meta": {"_type": "gradio.FileData"}}, *RENDER_ARGS, 0, 32, 32, "euler"]})
    events = httpx.get(f"{served.url}/gradio_api/call/reconstruct/{call.json()['event_id']}", timeout=120).text
    assert "event: error" in events and "event: complete" not in events
    copied = [f for _, _, fs in os.walk(served.own) for f in fs if f == "secret.png"]
    assert copied == []


def test_api_only_answers_in_its_own_shape(served):
    for body, message in (({"question": QUESTION, "seed": "7"}, "seed: Input should be a valid integer"),
                          ({"question": QUESTION, "force_image": "yes"}, "force_image: Input should be a valid "
                                                                          "boolean")):
        response = post(served, "chat", body)
        assert response.status_code == 400 and message in response.json()["error"]
    assert httpx.get(f"{served.url}/api/v1/nowhere").json()["error"].startswith("GET /api/v1/nowhere: no such")
    assert httpx.get(f"{served.url}/api/v1/chat").status_code == 405

    def chunks():  # 65 MiB with no Content-Length: counted as it arrives
        for _ in range(65):
            yield b"x" * 2 ** 20

    response = httpx.post(f"{served.url}/api/v1/chat", content=chunks(), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413 and "exceeds" in response.json()["error"]


# -- the page in a real browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(sf.CHROMIUM), f"{sf.CHROMIUM} is missing: `make test` installs Debian's chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=sf.CHROMIUM, args=sf.CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1200, "height": 1300})  # a browser session of its own
    page = context.new_page()
    page.set_default_timeout(120_000)  # the first request compiles the models
    page.goto(served.url)
    page.wait_for_selector("#message textarea")
    yield page
    context.close()


def ask(page, text: str, *uploads) -> None:
    if uploads:
        page.set_input_files("#message input[type=file]", [str(u) for u in uploads])
    page.locator("#message textarea").fill(text)
    page.locator("#message textarea").press("Enter")


def bot_messages(page):
    return page.locator("#chatbot [data-testid=bot]")


def drawn_pixels(page, selector: str) -> np.ndarray:
    """The pixels the browser decoded for the last `<img>` matching `selector` ([H, W, 4] uint8)."""
    last = "s => { const all = document.querySelectorAll(s); return all[all.length - 1]; }"
    page.wait_for_function(f"s => {{ const i = ({last})(s); return i && i.complete && i.naturalWidth > 0; }}",
                           arg=selector)
    flat, width, height = page.evaluate(f"""s => {{
        const img = ({last})(s), c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return [Array.from(g.getImageData(0, 0, c.width, c.height).data), c.width, c.height]; }}""", selector)
    return np.asarray(flat, np.uint8).reshape(height, width, 4)


def test_browser_chat_answers_draws_when_forced_and_edits(page, served, tmp_path):
    assert page.get_by_text(sf.BANNER).is_visible()
    ask(page, QUESTION, served.image_path)
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length >= 1")
    assert bot_messages(page).first.inner_text().strip() == "cat"
    page.get_by_label("force image generation").first.check()
    ask(page, "Now draw it")
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length >= 2")
    pixels = drawn_pixels(page, "#chatbot [data-testid=bot] img")
    assert pixels.shape[:2] == (32, 32) and pixels[..., :3].std() > 0
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    page.get_by_role("tab", name="Edit").click()
    page.set_input_files("#edit-source input[type=file]", served.image_path)
    page.locator("#edit-instruction textarea").fill("make it blue")
    page.get_by_role("button", name="Edit", exact=True).click()
    pixels = drawn_pixels(page, "#edit-image img")
    assert pixels.shape[:2] == (32, 32) and pixels[..., :3].std() > 0
    page.screenshot(path=str(tmp_path / "edit.png"), full_page=True)


def test_a_second_browser_session_has_its_own_conversation(browser, page, served):
    ask(page, QUESTION)
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length >= 1")
    other = browser.new_context().new_page()
    other.goto(served.url)
    other.wait_for_selector("#message textarea")
    assert bot_messages(other).count() == 0
    other.context.close()


BAD_UI = [("broken.png", QUESTION, "broken.png: not a recognised image file"),
          ("empty.png", QUESTION, "empty.png: an empty file"),
          ("huge.png", QUESTION, "huge.png: 7072x7072 = 50013184 pixels exceeds"),
          (None, "What is <img> here?", "question contains '<img>'"),
          (None, "   ", "question is empty")]


@pytest.mark.parametrize("upload, text, message", BAD_UI, ids=[m for _, _, m in BAD_UI])
def test_bad_input_in_the_page_is_one_readable_error_and_the_page_goes_on(page, files, upload, text, message):
    ask(page, text, *([files / upload] if upload else []))
    page.get_by_text(message).first.wait_for()
    assert bot_messages(page).count() == 0
    if upload:  # the refused file is still attached, as after any refusal: the user removes it
        page.get_by_label("Remove file").click()
    ask(page, QUESTION)
    page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=bot]').length >= 1")


def test_out_of_range_settings_in_the_page_are_one_readable_error(page):
    page.get_by_role("tab", name="Text-to-image").click()
    page.locator("#t2i-prompt textarea").fill("a cat")
    page.locator("#t2i-sampling").get_by_text("Sampling").click()
    page.locator("#t2i-seed input").fill("-5")
    page.locator("#t2i-seed input").press("Tab")  # the field commits its value when it loses focus
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("seed: -5 is outside").first.wait_for()


# -- the command ----------------------------------------------------------------------------------

def test_seedx_jax_serve_as_typed_serves_until_ctrl_c_and_leaves_no_folder(served, tmp_path):
    work, tmp = tmp_path / "elsewhere", tmp_path / "tmp"
    work.mkdir(), tmp.mkdir()
    port = sf.free_port()
    command = [os.path.join(os.path.dirname(sys.executable), "seedx-jax"), "serve", "--checkpoint",
               os.path.relpath(served.chat_path, work), "--port", str(port)]
    proc = subprocess.Popen(command, cwd=work, env=dict(os.environ, TMPDIR=str(tmp)), stderr=subprocess.PIPE,
                            text=True, preexec_fn=interruptible)
    try:
        health = None
        for _ in range(600):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        assert health is not None and health["chat"] and not health["edit"]
        assert os.listdir(tmp)  # its own folder
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    assert os.listdir(tmp) == []


def test_serve_refuses_bad_arguments_in_one_line_before_loading(served, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        cases = [(["--checkpoint", str(tmp_path / "missing")], "missing"),
                 (["--checkpoint", served.chat_path, "--edit-checkpoint", served.chat_path], "stage-2"),
                 (["--checkpoint", served.chat_path, "--port", str(taken)], f"--port {taken}: cannot listen"),
                 (["--checkpoint", served.chat_path, "--height", "36"], "height: 36 is not a multiple of 8"),
                 (["--port", "0"], "--port: 0 must be at least 1"),
                 (["--port", "99999"], "--port: 99999 must be at most 65535")]
        for argv, message in cases:
            assert main(["serve", *argv]) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err
