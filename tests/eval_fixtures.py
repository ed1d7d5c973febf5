"""Tiny scripted pipelines for `seedx-jax eval` tests: after a prompt's last token ("\\n" of the chat
templates) the agent says "car" and stops; the base template's grounding prompt (ends in <box_start>)
gets the box of test_cli; its text-to-image prompt (ends in <img>) an image."""
import json
import shutil

import numpy as np
from flax import nnx
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import save_pipeline
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.vision.vit import QwenViT
from seedx_fixtures import script_agent, train_sp_model

BOX = ["<loc-112>", "<loc-100>", "<loc-50>", "<loc-60>"]  # on 500 x 300: pixels (194, 93, 305, 174)
ANSWER_BOX = (194, 93, 305, 174)


def answer_ids(tok: SeedXTokenizer, word: str) -> list[int]:
    ids = tok.encode(word)
    assert len(set(ids)) == len(ids), f"{word!r}: a piece repeats, the script cannot follow it"
    return ids


def build_pipelines(root) -> dict:
    """root/chat (seed_x_i), root/base (seed_x) and root/photo.png (500 x 300)."""
    tok = SeedXTokenizer(train_sp_model(str(root / "sp.model")))
    car = answer_ids(tok, "car")
    script = {"\n": car[0], **dict(zip(car, car[1:])), car[-1]: "</s>",
              T.BOX_START: BOX[0], BOX[0]: BOX[1], BOX[1]: BOX[2], BOX[2]: BOX[3], BOX[3]: T.BOX_END,
              T.BOX_END: "</s>", T.IMG_END: "</s>"}
    vit = QwenViT(TINY_VISION, rngs=nnx.Rngs(0))
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(1))
    script_agent(agent, tok, script)
    save_pipeline(str(root / "chat"), tokenizer=tok, vit=vit, agent=agent, template="seed_x_i",
                  detokenizer=Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(2)))
    # the same models under the base template: a copy whose pipeline manifest names it (saves a second save)
    shutil.copytree(root / "chat", root / "base")
    (root / "base" / "seedx.json").write_text(json.dumps({"format": "seedx_jax/1", "template": "seed_x"}))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), np.uint8)).save(root / "photo.png")
    return {name: root / name for name in ("chat", "base")}
