"""A `seedx-jax serve` app on tiny scripted pipelines, for the API and browser tests.

The SEED-X-I agent is scripted to answer a question with text ("cat") and never to draw unless
forced; the SEED-X-Edit agent answers every instruction with an image (its prompt ends in "\\n", which
it follows with `<img>`)."""
import os
import types

import numpy as np
from flax import nnx
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import save_pipeline
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.pipelines import SeedX
from seedx_jax.serve.app import Server, make_app
from seedx_jax.serve.service import RenderSettings, Service
from seedx_jax.vision.vit import QwenViT
from processes import free_port
from seedx_fixtures import script_agent, train_sp_model

TEXT_ANSWER = {"\n": "▁c", "▁c": "at", "at": "</s>", T.IMG_END: "</s>"}  # "cat"
DRAWS = {"\n": T.IMG_START, T.IMG_END: "</s>"}
RENDER = RenderSettings(steps=2, guidance_scale=3.0, height=32, width=32)
BANNER = "UNTRAINED: tiny scripted test pipelines"
CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package (`make test` installs it)
# a closed network: no background fetches, updates or sync (each would be refused, many at a time)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def write_pipelines(root: str) -> tuple[str, str]:
    """(SEED-X-I, SEED-X-Edit) pipeline directories under `root` (see the module doc)."""
    tok = SeedXTokenizer(train_sp_model(os.path.join(root, "sp.model")))
    vit = QwenViT(TINY_VISION, rngs=nnx.Rngs(0))
    paths = []
    for name, script, preset, template, seed in (("seedx_i", TEXT_ANSWER, "tiny", "seed_x_i", 1),
                                                 ("seedx_edit", DRAWS, "tiny_edit", "seed_x_edit", 2)):
        agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(seed))
        script_agent(agent, _Pieces(tok), script)
        paths.append(os.path.join(root, name))
        save_pipeline(paths[-1], tokenizer=tok, vit=vit, agent=agent, template=template,
                      detokenizer=Detokenizer(DetokenizerConfig.preset(preset), rngs=nnx.Rngs(3)))
    return paths[0], paths[1]


class _Pieces:
    """The tokenizer as `script_agent` reads it, with SentencePiece's ordinary pieces ("▁red") too."""

    def __init__(self, tokenizer: SeedXTokenizer):
        self.eos_id, self._tok = tokenizer.eos_id, tokenizer

    def token_id(self, token: str) -> int:
        piece = self._tok.sp.piece_to_id(token)
        return piece if piece != self._tok.unk_id else self._tok.token_id(token)


def photo(path: str, size=(300, 200), seed: int = 0) -> str:
    """A random RGB PNG of `size` (width, height) at `path`."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def start(root: str):
    """The pipelines written and loaded, the app served on a free loopback port -> a namespace with `url`,
    `service`, `chat_path`, `edit_path`, `image_path`, `own` (the server's folder) and `stop()`."""
    os.makedirs(root, exist_ok=True)
    chat_path, edit_path = write_pipelines(root)
    service = Service(SeedX.load(chat_path), SeedX.load(edit_path), defaults=RENDER, banner=BANNER)
    own = os.path.join(root, "server")
    server = Server(make_app(service, own), "127.0.0.1", free_port()).start()
    return types.SimpleNamespace(url=server.url, service=service, chat_path=chat_path, edit_path=edit_path,
                                 image_path=photo(os.path.join(root, "photo.png")), own=own, stop=server.stop)
