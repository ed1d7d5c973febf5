"""Small training data in every official format, written by the tests: coloured-rectangle images of
varying sizes, LLaVA conversation jsonl, edit jsonl, webdataset tar shards, and a tiny tokenizer."""
import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_fixtures import train_sp_model

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def image_bytes(colour: str, size=(64, 48), fmt="PNG") -> bytes:
    """A grey image with one block of `colour` (the thing captions and answers talk about)."""
    w, h = size
    pixels = np.full((h, w, 3), 128, np.uint8)
    pixels[h // 4:3 * h // 4, w // 4:3 * w // 4] = COLOURS[colour]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def write_images(directory: str, sizes=((448, 200), (48, 64), (80, 40), (56, 56))) -> list[tuple[str, str]]:
    """One image per colour; returns [(file name, colour)]."""
    os.makedirs(directory, exist_ok=True)
    out = []
    for (colour, _), size in zip(COLOURS.items(), sizes):
        name = f"{colour}.png"
        with open(os.path.join(directory, name), "wb") as f:
            f.write(image_bytes(colour, size))
        out.append((name, colour))
    return out


def write_llava_jsonl(path: str, images: list[tuple[str, str]], extra_lines=()) -> str:
    with open(path, "w") as f:
        for name, colour in images:
            f.write(json.dumps({"image": "/" + name, "data": ["What colour is the block?", f"The block is {colour}."]})
                    + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def write_edit_jsonl(path: str, images: list[tuple[str, str]], extra_lines=()) -> str:
    with open(path, "w") as f:
        for (src, c1), (tgt, c2) in zip(images, images[1:] + images[:1]):
            f.write(json.dumps({"source_image": src, "target_image": tgt, "instruction": f"make the {c1} block {c2}"})
                    + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def write_tar(path: str, images: list[tuple[str, str]], image_dir: str, extra_members=()) -> str:
    """webdataset shard: KEY.png (as .jpg member name), KEY.txt, KEY.json."""
    def add(tar, name, data: bytes):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        for i, (name, colour) in enumerate(images):
            with open(os.path.join(image_dir, name), "rb") as f:
                add(tar, f"{i:05d}.jpg", f.read())
            add(tar, f"{i:05d}.txt", f"a {colour} block on grey".encode())
            add(tar, f"{i:05d}.json", json.dumps({"similarity": 0.3}).encode())
        for name, data in extra_members:
            add(tar, name, data)
    return path


def tokenizer_dir(directory: str) -> str:
    tok = SeedXTokenizer(train_sp_model(os.path.join(directory, "sp.model")))
    tok.save(os.path.join(directory, "tokenizer"))
    return os.path.join(directory, "tokenizer")


def write_all(root: str) -> dict:
    """Every fixture under `root`: {"images", "image_dir", "llava", "edit", "tar", "tokenizer"}."""
    image_dir = os.path.join(root, "img")
    images = write_images(image_dir)
    return dict(images=images, image_dir=image_dir, tokenizer=tokenizer_dir(root),
                llava=write_llava_jsonl(os.path.join(root, "conv.jsonl"), images),
                edit=write_edit_jsonl(os.path.join(root, "edit.jsonl"), images),
                tar=write_tar(os.path.join(root, "pairs.tar"), images, image_dir))


def tiny_config(stage: str, data: dict, *, steps: int, devices: int = 1, **train):
    """configs/<stage>.py:tiny pointed at the fixtures of `write_all`, on the first `devices` devices."""
    import importlib

    config = importlib.import_module(f"configs.{stage}").get_config("tiny")
    config.tokenizer = data["tokenizer"]
    files = {"llava_jsonl": data["llava"], "edit_jsonl": data["edit"], "webdataset": data["tar"]}
    for source in config.data.sources.values():
        source.paths, source.image_dir = files[source.format], data["image_dir"]
    config.train.update(steps=steps, **train)
    config.mesh.num_devices = devices
    return config
