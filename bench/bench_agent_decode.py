"""SEED-X agent decoding: seedx_jax `generate_agent` vs transformers `generate`, same weights, one run.

    .venv/bin/python bench/bench_agent_decode.py [--layers 4 --hidden 512 --new-tokens 64 ...]

Both sides decode the official way (src/models/mllm/seed_x.py): a multimodal prompt (BOS, text, one 1x1 any-res
image = 132 tokens whose placeholders carry resampled image features, text) prefilled from
inputs_embeds, greedy, with the image-token forcing processor and the hidden states of every step
kept. The torch side is transformers' eager Llama with a `LogitsProcessor` written from generation.py and
`output_hidden_states`, as the official code calls it. Reported: time to first token (embedding +
prefill + first token) and decode throughput at batch 1 and 8; ratio torch/jax (> 1: we are faster).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import jax
import numpy as np
import torch
from flax import nnx
from transformers import LogitsProcessor, LogitsProcessorList

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_agent_config import add_agent_args, agent_config  # noqa: E402
from bench_llama import timed  # noqa: E402
from seedx_fixtures import TorchAgent  # noqa: E402
from torch_llama import state_numpy  # noqa: E402

from seedx_jax.agent.generate import ImageTokenForcing, generate_agent  # noqa: E402
from seedx_jax.agent.model import SeedXAgent  # noqa: E402
from seedx_jax.agent.params import load_agent  # noqa: E402

EOS = 2


class TorchImageForcing(LogitsProcessor):
    """The official AutoImageTokenGenerationProcessor: max + 10 forcing, 0.0 suppression."""

    def __init__(self, span):
        self.span = list(span)

    def __call__(self, input_ids, scores):
        for row in range(input_ids.shape[0]):
            last = int(input_ids[row, -1])
            if last in self.span[:-1]:
                nxt = self.span[self.span.index(last) + 1]
                scores[row, nxt] = scores[row].max() + 10
            else:
                scores[row, self.span[1:]] = 0.0
        return scores


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_agent_args(p)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()

    d, c = args.hidden, args.feature_dim
    cfg = agent_config(args)
    llm = cfg.llm
    torch.set_num_threads(os.cpu_count())
    ref = TorchAgent(cfg).float().eval()
    ours = SeedXAgent(cfg, rngs=nnx.Rngs(0))
    load_agent(ours, state_numpy(ref))
    base = args.base_vocab
    img, img_end, patch, patch_end = base + 100, base + 101, base + 102, base + 103
    span = (img, *range(base, base + 64), img_end)
    forcing = ImageTokenForcing(span)
    print(f"devices: jax {jax.devices()[0].platform}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"agent: {args.layers} layers, d={d}, vocab={llm.vocab_size}, C={c}, fp32; {args.new_tokens} new tokens")

    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        image = [patch, *range(base, base + 64), patch_end, img, *range(base, base + 64), img_end]
        prompts = np.stack([[1, *rng.integers(3, base, 10), *image, *rng.integers(3, base, 12)] for _ in range(batch)])
        t = prompts.shape[1]
        mask = np.zeros_like(prompts, bool)
        mask[:, 12:76] = mask[:, 78:142] = True
        feats = rng.normal(size=(2 * batch, 256, c)).astype(np.float32)
        positions = np.full((2 * batch, 2), 0.5, np.float32)

        def jax_run(n):
            return generate_agent(ours, prompts, max_new_tokens=n, forcing=forcing, stop_token_ids=[EOS],
                                  ids_cmp_mask=mask, cmp_features=feats, cmp_positions=positions)

        def torch_run(n):
            with torch.no_grad():
                embeds = ref.embed(torch.tensor(prompts), torch.tensor(mask), torch.tensor(feats),
                                   torch.tensor(positions))
                return ref.llm.generate(input_ids=torch.tensor(prompts), inputs_embeds=embeds, max_new_tokens=n,
                                        min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0,
                                        logits_processor=LogitsProcessorList([TorchImageForcing(span)]),
                                        output_hidden_states=True, return_dict_in_generate=True)

        want = torch_run(16).sequences.numpy()[:, -16:]
        got = jax_run(16).tokens
        same = (want == got).all()
        print(f"batch {batch}: greedy ids {'match' if same else 'DIFFER'} for 16 tokens (prompt {t})")
        for name, n, unit_count in (("time to first token", 1, batch), (f"decode {args.new_tokens}", args.new_tokens,
                                                                        batch * args.new_tokens)):
            tt = timed(lambda: torch_run(n), args.steps, args.warmup)[1]
            jt = timed(lambda: jax_run(n), args.steps, args.warmup)[1]
            rows.append((f"{name}, batch {batch}", tt, jt, unit_count))

    print()
    print(f"{'benchmark':<32} {'torch s':>9} {'jax s':>9} {'torch/jax':>10}  new tok/s torch | jax")
    for name, tt, jt, units in rows:
        print(f"{name:<32} {tt:>9.4f} {jt:>9.4f} {tt / jt:>9.2f}x  {units / tt:,.0f} | {units / jt:,.0f}")


if __name__ == "__main__":
    main()
