"""UNet2DConditionModel vs diffusers on a tiny SDXL-style config, SAME random weights in the diffusers layout.

Tolerance: max |diff| <= 1e-4 x max |reference| on the noise prediction (float32), for 4- and
8-channel conv_in, scanned and unrolled transformer blocks.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel as TorchUNet
from flax import nnx

from seedx_jax.diffusion.params import load_unet
from seedx_jax.diffusion.unet import NUM_TIME_IDS, UNet2DConditionModel, UNetConfig
from parity import max_rel_diff, randomize_

CFG = UNetConfig.preset("tiny")


def diffusers_kwargs(cfg: UNetConfig) -> dict:
    """The diffusers config of an SDXL-style U-Net with our config's sizes."""
    return dict(
        sample_size=16, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        down_block_types=cfg.down_block_types, up_block_types=cfg.up_block_types,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        transformer_layers_per_block=cfg.transformer_layers_per_block,
        attention_head_dim=cfg.num_attention_heads,  # SDXL's config spelling of the head counts
        cross_attention_dim=cfg.cross_attention_dim, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=cfg.addition_time_embed_dim,
        projection_class_embeddings_input_dim=cfg.pooled_dim + NUM_TIME_IDS * cfg.addition_time_embed_dim,
        norm_num_groups=cfg.norm_num_groups, norm_eps=cfg.norm_eps,
    )


def build_pair(cfg: UNetConfig, seed: int = 0):
    torch.manual_seed(seed)
    ref = randomize_(TorchUNet(**diffusers_kwargs(cfg)), seed)
    ours = UNet2DConditionModel(cfg, rngs=nnx.Rngs(0))
    state = [("unet." + k, v.numpy()) for k, v in ref.state_dict().items()]
    assert len(load_unet(ours, state, strict=True).loaded) == len(state)
    return ref, ours


def inputs(cfg: UNetConfig, n: int = 2, h: int = 16, w: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    return dict(sample=rng.normal(size=(n, h, w, cfg.in_channels)).astype(f32),
                timesteps=np.array([981.0, 421.5][:n], f32),
                context=rng.normal(size=(n, 5, cfg.cross_attention_dim)).astype(f32),
                pooled=rng.normal(size=(n, cfg.pooled_dim)).astype(f32),
                time_ids=np.tile(np.array([[1024, 1024, 0, 0, 1024, 1024]], f32), (n, 1)) * rng.uniform(0.5, 1, (n, 1)).astype(f32))


def reference(ref, x) -> np.ndarray:
    with torch.no_grad():
        out = ref(torch.tensor(x["sample"]).permute(0, 3, 1, 2), torch.tensor(x["timesteps"]),
                  torch.tensor(x["context"]),
                  added_cond_kwargs={"text_embeds": torch.tensor(x["pooled"]), "time_ids": torch.tensor(x["time_ids"])})
    return out.sample.permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def pair():
    return build_pair(CFG)


def test_noise_prediction_matches_diffusers(pair):
    ref, ours = pair
    x = inputs(CFG)
    want = reference(ref, x)
    got = jax.jit(lambda m, a: m(**a))(ours, {k: jnp.asarray(v) for k, v in x.items()})
    assert got.shape == want.shape == (2, 16, 12, 4)
    assert max_rel_diff(got, want) <= 1e-4
    # the conditioning matters: other pooled / context inputs change the reference beyond the bound
    y = dict(x, pooled=x["pooled"][::-1].copy(), context=x["context"][::-1].copy())
    assert max_rel_diff(reference(ref, y), want) > 1e-2


def test_unrolled_blocks_and_8_channel_conv_in():
    cfg = CFG.replace(in_channels=8, scan_layers=False, remat="full")
    ref, ours = build_pair(cfg, seed=1)
    x = inputs(cfg, n=1, h=8, w=8, seed=1)
    got = ours(**{k: jnp.asarray(v) for k, v in x.items()})
    assert max_rel_diff(got, reference(ref, x)) <= 1e-4


@pytest.mark.slow  # moved out of the default suite's 15 minutes; test_unet's other scan tests stay
def test_scanned_gradients_match_unrolled():
    """Scanned + no remat vs unrolled + full remat: the same gradients (2-level config: compile time)."""
    cfg = CFG.replace(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                      num_attention_heads=(2, 2), layers_per_block=1)
    ref, scanned = build_pair(cfg)
    unrolled = UNet2DConditionModel(cfg.replace(scan_layers=False, remat="full"), rngs=nnx.Rngs(1))
    load_unet(unrolled, [(k, v.numpy()) for k, v in ref.state_dict().items()], strict=True)
    x = {k: jnp.asarray(v) for k, v in inputs(cfg, n=1, h=8, w=8).items()}

    def loss(model):
        return jnp.mean(model(**x) ** 2)

    grad = nnx.jit(nnx.grad(loss))
    g_scan, g_unrolled = grad(scanned), grad(unrolled)
    a = g_scan["up_blocks"][0]["attentions"][1]["transformer_blocks"]["attn2"]["k_proj"]["kernel"][...][1]
    b = g_unrolled["up_blocks"][0]["attentions"][1]["transformer_blocks"][1]["attn2"]["k_proj"]["kernel"][...]
    assert float(jnp.abs(b).max()) > 0
    assert max_rel_diff(a, b) <= 1e-5
    assert max_rel_diff(g_scan["conv_in"]["kernel"][...], g_unrolled["conv_in"]["kernel"][...]) <= 1e-5


def test_sdxl_parameter_count_matches_diffusers():
    full = nnx.eval_shape(lambda: UNet2DConditionModel(UNetConfig.preset("sdxl"), rngs=nnx.Rngs(0)))
    count = sum(x.size for x in jax.tree.leaves(nnx.state(full)))
    with torch.device("meta"):
        ref = TorchUNet(**diffusers_kwargs(UNetConfig.preset("sdxl")))
    assert count == sum(p.numel() for p in ref.parameters()) == 2_567_463_684
    edit = nnx.eval_shape(lambda: UNet2DConditionModel(UNetConfig.preset("sdxl_edit"), rngs=nnx.Rngs(0)))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(edit))) == count + 4 * 320 * 9


@pytest.mark.parametrize("change, message", [
    (dict(sample=np.zeros((2, 15, 12, 4), np.float32)), r"sample height/width \(15, 12\) must be multiples of 4"),
    (dict(sample=np.zeros((2, 4, 16, 16), np.float32)), r"sample must be \[N, h, w, 4\]"),
    (dict(context=np.zeros((2, 5, 23), np.float32)), r"context must be \[2, T, 24\]"),
    (dict(pooled=np.zeros((1, 20), np.float32)), r"pooled must be \[2, 20\]"),
    (dict(time_ids=np.zeros((2, 5), np.float32)), r"time_ids must be \[2, 6\]"),
])
def test_bad_input_names_the_argument(pair, change, message):
    x = dict(inputs(CFG), **change)
    with pytest.raises(ValueError, match=message):
        pair[1](**{k: jnp.asarray(v) for k, v in x.items()})


def test_bad_config():
    with pytest.raises(ValueError, match=r"down_block_types: \['AttnDownBlock2D'\] not supported"):
        CFG.replace(down_block_types=("DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D"))
    with pytest.raises(ValueError, match="num_attention_heads has 2 entries"):
        CFG.replace(num_attention_heads=(2, 4))


@pytest.mark.slow  # test_sharding covers sharded == unsharded in the default suite
def test_sharded_unet_equals_unsharded(pair):
    from seedx_jax import sharding

    _, ours = pair
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, state = nnx.split(ours)
    forward = jax.jit(lambda s, a: nnx.merge(graphdef, s)(**a))
    x = {k: jnp.asarray(v) for k, v in inputs(CFG, n=2, h=8, w=8).items()}
    want = forward(state, x)
    with jax.set_mesh(mesh):
        sharded = sharding.shard_state(state, mesh)
        got = forward(sharded, x)
    flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(sharded)}
    spec = flat["down_blocks.1.attentions.0.transformer_blocks.attn2.k_proj.kernel"].sharding.spec
    assert spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")  # [layers, context, heads]
    assert max_rel_diff(got, want) <= 1e-5


def test_sdxl_shards_over_fsdp_abstractly():
    from seedx_jax import sharding

    mesh = sharding.make_mesh({"fsdp": -1})
    cfg = UNetConfig.preset("sdxl", dtype="bfloat16", param_dtype="bfloat16")
    _, abstract = sharding.abstract_model(lambda: UNet2DConditionModel(cfg, rngs=nnx.Rngs(0)), mesh)
    per_device = sum(np.prod(v.sharding.shard_shape(v.shape)) for v in jax.tree.leaves(abstract))
    total = sum(v.size for v in jax.tree.leaves(abstract))
    assert per_device <= 1.02 * total / 8  # nearly everything splits 8 ways (norm vectors stay whole)
