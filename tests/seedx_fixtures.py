"""Tiny SEED-X pieces the agent, generation and pipeline tests share: a SentencePiece model trained
in-process with Llama-2's layout (unk 0, bos 1, eos 2, byte fallback so "\\n" is <0x0A> = 13), and a
PyTorch agent statement (transformers Llama + torch resamplers) in the released key layout."""
import torch
from torch import nn

from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.tokenizer import train_sentencepiece
from parity import randomize_
from torch_llama import hf_llama
from torch_vision import TorchResampler

SP_VOCAB = 320
CORPUS = ["Question: what is in the picture? Answer: a red car on the road.",
          "[INST] Generate an image: a cat sitting on a blue sofa [/INST] Here is a picture.",
          "In the background with a blue sky on the road, there is a car [[",
          "Describe the image in detail. The image shows 3 dogs and 12 birds.",
          "Please show me a picture of a mountain lake at sunset, with trees."]


def train_sp_model(path: str) -> str:
    """A 320-piece model of `CORPUS` in Llama-2's layout (`train_sentencepiece`)."""
    return train_sentencepiece(path, CORPUS * 20, SP_VOCAB)


class TorchAgent(nn.Module):
    """The official ContinuousLVLM's parameters: `llm.*`, `input_resampler.*`, `output_resampler.*`,
    `patch_pos_embed` - its `state_dict()` is the released agent key layout."""

    def __init__(self, cfg: AgentConfig, seed: int = 0):
        super().__init__()
        self.llm = hf_llama(cfg.llm, seed)
        torch.manual_seed(seed + 1)
        for name in ("input_resampler", "output_resampler"):
            r = getattr(cfg, name)
            setattr(self, name, randomize_(TorchResampler(r.grid_size, r.embed_dim, r.num_heads, r.kv_dim, r.eps),
                                           seed + 2))
        d = cfg.llm.hidden_size
        self.patch_pos_embed = nn.Parameter(torch.randn(4, d) * d ** -0.5)
        self.cfg = cfg

    def embed(self, input_ids, ids_cmp_mask, cmp_features, cmp_positions):
        """seed_x.py: resample, add (x P0 + y P1 + (1-x) P2 + (1-y) P3) / 2, overwrite in place."""
        embeds = self.llm.get_input_embeddings()(input_ids).clone()
        if cmp_features is not None:
            feats = self.input_resampler(cmp_features)
            coeffs = torch.cat([cmp_positions, 1 - cmp_positions], dim=-1) / 2
            feats = feats + (coeffs @ self.patch_pos_embed)[:, None]
            embeds[ids_cmp_mask] = feats.reshape(-1, feats.shape[-1])
        return embeds

    def forward(self, input_ids, ids_cmp_mask, cmp_features, cmp_positions, ids_gen_mask, gen_targets, labels):
        """seed_x.py: LM loss of the LLM + 6 x MSE(output_resampler(h[ids_gen]), avg_pool1d(target, 4))."""
        embeds = self.embed(input_ids, ids_cmp_mask, cmp_features, cmp_positions)
        out = self.llm(inputs_embeds=embeds, labels=labels, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        n_gen = gen_targets.shape[0]
        pred = self.output_resampler(hidden[ids_gen_mask].view(n_gen, -1, hidden.shape[-1]))
        target = nn.functional.avg_pool1d(gen_targets.transpose(1, 2), 4, 4).transpose(1, 2)
        rec = nn.functional.mse_loss(pred, target.detach())
        return out.logits, hidden, pred, out.loss, rec, out.loss + 6.0 * rec


def script_agent(agent, tokenizer, transitions: dict[str, str]) -> None:
    """Make a random agent answer deterministically: with the residual branches zeroed, the hidden
    state is RMSNorm(embedding of the current token), and lm_head maps each `transitions` source
    token to its target (token strings, "\\n" / "</s>", or ids). Other tokens get logit 0."""
    import jax.numpy as jnp

    llm = agent.llm
    llm.layers.self_attn.o_proj.kernel[...] = jnp.zeros_like(llm.layers.self_attn.o_proj.kernel[...])
    llm.layers.mlp.down_proj.kernel[...] = jnp.zeros_like(llm.layers.mlp.down_proj.kernel[...])
    llm.norm.scale[...] = jnp.ones_like(llm.norm.scale[...])
    emb = llm.embed_tokens.embedding[...]
    head = jnp.zeros_like(llm.lm_head.kernel[...])
    for src, dst in transitions.items():
        e = emb[_token_id(tokenizer, src)]
        head = head.at[:, _token_id(tokenizer, dst)].add(10 * e / jnp.sqrt(jnp.mean(e * e)))
    llm.lm_head.kernel[...] = head


def script_torch_agent(agent: TorchAgent, tokenizer, transitions: dict[str, str]) -> None:
    """`script_agent` on the PyTorch statement, for release files whose answers are known."""
    llm = agent.llm
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        llm.model.norm.weight.fill_(1.0)
        emb = llm.model.embed_tokens.weight
        head = llm.lm_head.weight  # [vocab, hidden]: the transpose of our kernel
        head.zero_()
        for src, dst in transitions.items():
            e = emb[_token_id(tokenizer, src)]
            head[_token_id(tokenizer, dst)] += 10 * e / torch.sqrt(torch.mean(e * e))


def _token_id(tokenizer, token: str | int) -> int:
    """A token string ("\\n", "</s>", an added token) or an id (a SentencePiece piece's)."""
    if isinstance(token, int):
        return token
    return {"\n": 13, "</s>": tokenizer.eos_id}.get(token) or tokenizer.token_id(token)
