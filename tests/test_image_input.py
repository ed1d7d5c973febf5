"""Image inputs: every mode and source kind, EXIF orientation, and clear errors for bad files."""

import numpy as np
import pytest
from PIL import Image

from seedx_jax.vision.image_io import ImageInputError, load_image, load_images


def _save(image, tmp_path, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"),
                                       ("I;16", "PNG"), ("CMYK", "JPEG"), ("RGB", "JPEG")])
def test_modes_and_sources(tmp_path, mode, fmt):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    image = base.convert(mode) if mode != "I;16" else Image.fromarray(
        np.asarray(base.convert("L"), np.uint16) * 257)  # uint16 arrays become mode I;16
    assert image.mode == mode
    path = _save(image, tmp_path, f"x.{fmt.lower()}", format=fmt)
    for src in (path, str(path), path.read_bytes(), Image.open(path)):
        out = load_image(src)
        assert out.mode == "RGB" and out.size == (30, 20)
    if mode in ("L", "I;16"):  # 16-bit is scaled to 8 bits, not clipped to white
        np.testing.assert_array_equal(np.asarray(load_image(path))[..., 0], np.asarray(base.convert("L")))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(image, tmp_path, "rot.jpg", exif=exif.tobytes())
    assert load_image(path).size == (10, 40)


def test_bad_inputs_name_the_input(tmp_path):
    good = _save(Image.new("RGB", (8, 8)), tmp_path, "ok.png")
    truncated = tmp_path / "cut.jpg"
    _save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)),
          tmp_path, "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp_path / "noise.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cases = {
        str(empty): r"an empty file \(0 bytes\)",
        str(tmp_path / "missing.png"): "no such file",
        str(truncated): "cannot decode image",
        str(text): "not a recognised image file",
        str(corrupt): "not a recognised image file|cannot decode image",
    }
    for src, problem in cases.items():
        with pytest.raises(ImageInputError, match=f"^{src}: ({problem})"):
            load_image(src)
    with pytest.raises(ImageInputError, match=r"^<PIL image RGB 0x5>: image has zero size"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ImageInputError, match=r"ok.png: 8x8 = 64 pixels exceeds max_pixels=63"):
        load_image(good, max_pixels=63)

    loaded, skipped = load_images([good, str(text), str(truncated), good])
    assert [i for i, _ in loaded] == [0, 3]
    assert len(skipped) == 2 and skipped[0].startswith(str(text)) and skipped[1].startswith(str(truncated))
