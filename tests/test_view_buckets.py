"""Encoding a stream of differently shaped images compiles at most one program per bucket."""
import numpy as np
from flax import nnx
from PIL import Image

from seedx_jax.vision import QwenViT, VisionConfig
from seedx_jax.vision.anyres import process_anyres
from seedx_jax.vision.encode import ViewEncoder

BASE = 112  # tiny views keep the test fast; the bucketing logic does not depend on the size


def test_stream_of_shapes_compiles_at_most_one_program_per_bucket():
    vit = QwenViT(VisionConfig.preset("qwen_vit_tiny", image_size=BASE), rngs=nnx.Rngs(0))
    encoder = ViewEncoder(vit, buckets=(1, 2, 4, 8))
    rng = np.random.default_rng(0)
    shapes = [(112, 112), (300, 100), (100, 300), (224, 112), (112, 224), (500, 120), (120, 500),
              (250, 240), (90, 60), (336, 112)]
    images = [process_anyres(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), base=BASE)
              for w, h in shapes * 2]
    assert len({im.num_views for im in images}) >= 4  # 2..5 views per image
    per_image = [encoder.encode_images([im])[0] for im in images]
    assert encoder.traces <= len(encoder.buckets)
    # padding views never change the real outputs
    direct = np.asarray(vit(images[7].pixels))
    np.testing.assert_allclose(np.asarray(per_image[7]), direct, rtol=1e-5, atol=1e-6)
    # a batch of images in one go splits back per image (11 views -> 8 + 4 padded to 4)
    batch = encoder.encode_images(images[:4])
    assert [b.shape[0] for b in batch] == [im.num_views for im in images[:4]]
    np.testing.assert_allclose(np.asarray(batch[3]), np.asarray(per_image[3]), rtol=1e-5, atol=1e-6)
    assert encoder.traces <= len(encoder.buckets)
