"""SEED-X's added token strings (SEEDX.md §7.2) and the prompt text of an any-res image (§2.6)."""

IMG_START, IMG_END = "<img>", "</img>"
PATCH_START, PATCH_END = "<patch>", "</patch>"
NUM_IMAGE_TOKENS = 64  # placeholders per (sub-)image


def image_token(index: int) -> str:
    return f"<img_{index:05d}>"


IMAGE_PLACEHOLDERS = "".join(image_token(i) for i in range(NUM_IMAGE_TOKENS))


def anyres_image_text(num_tiles: int) -> str:
    """`<patch>` + 64 placeholders + `</patch>` per tile (tile order), then the global view in `<img>`."""
    if num_tiles < 1:
        raise ValueError(f"num_tiles={num_tiles} must be >= 1")
    tile = PATCH_START + IMAGE_PLACEHOLDERS + PATCH_END
    return tile * num_tiles + IMG_START + IMAGE_PLACEHOLDERS + IMG_END
