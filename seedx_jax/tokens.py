"""SEED-X's added token strings and the prompt text of an any-res image (docs/tokenizer.md,
docs/architecture.md#prompt-text-of-an-image)."""

IMG_START, IMG_END = "<img>", "</img>"
PATCH_START, PATCH_END = "<patch>", "</patch>"
NUM_IMAGE_TOKENS = 64  # placeholders per (sub-)image


def image_token(index: int) -> str:
    return f"<img_{index:05d}>"


def image_placeholders(num_image_tokens: int = NUM_IMAGE_TOKENS) -> str:
    return "".join(image_token(i) for i in range(num_image_tokens))


def anyres_image_text(num_tiles: int, num_image_tokens: int = NUM_IMAGE_TOKENS) -> str:
    """`<patch>` + placeholders + `</patch>` per tile (tile order), then the global view in `<img>`."""
    if num_tiles < 1:
        raise ValueError(f"num_tiles={num_tiles} must be >= 1")
    placeholders = image_placeholders(num_image_tokens)
    return (PATCH_START + placeholders + PATCH_END) * num_tiles + IMG_START + placeholders + IMG_END

BOX_START, BOX_END = "<box_start>", "<box_end>"
NUM_LOC_BINS = 224  # <loc-0>..<loc-223>: box coordinates in 1/224 of the image size (docs/tokenizer.md)


def loc_token(k: int) -> str:
    return f"<loc-{k}>"
