"""The printed tables: every row measured, then issue 20's "Must show" targets with PASS / MISS."""
from __future__ import annotations


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f} ms" if seconds < 10 else f"{seconds:9.2f} s "


def print_machine(info: dict, ceiling: dict | None) -> None:
    print(f"date {info['date']}; CPU {info['cpu']}, {info['cores']} cores, flags {' '.join(info['cpu_flags'])}")
    print(f"python {info['python']}, jax {info['jax']} (XLA {info['xla_backend']}: {info['xla_platform_version']}), "
          f"flax {info['flax']}, torch {info['torch']} ({info['torch_threads']} threads); "
          f"XLA_FLAGS={info['xla_flags']!r}; load average {info['load_avg_1min']:.2f}")
    if ceiling:
        g = 1e9
        f32, b16, bw = ceiling["fp32_flops"], ceiling["bf16_flops"], ceiling["read_bytes_per_s"]
        print(f"ceiling: matmul {ceiling['matmul_n']}^3 fp32 jax {f32['jax'] / g:.1f} / torch {f32['torch'] / g:.1f} "
              f"GFLOP/s, bf16 jax {b16['jax'] / g:.1f} / torch {b16['torch'] / g:.1f} GFLOP/s; read bandwidth "
              + ", ".join(f"{k} {v / g:.1f}" for k, v in bw.items()) + " GB/s")


def print_header() -> None:
    print(f"\n{'hot path':<58} {'torch median / min':>24} {'jax median / min':>24} {'torch/jax [range]':>20} "
          f"{'jax compile':>11} {'ceiling':>8}  check")


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        ceiling = f"{r['ceiling_fraction']:7.1%}" if "ceiling_fraction" in r else "      -"
        left = "" if r["left"] == "torch" else f" ({r['left']} / jax bf16)"
        print(f"{r['name'][:58]:<58} {_ms(r['torch_median_s'])} /{_ms(r['torch_min_s'])} "
              f"{_ms(r['jax_median_s'])} /{_ms(r['jax_min_s'])} {r['ratio_median']:5.2f}x "
              f"[{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] {r['jax_compile_s']:9.1f} s {ceiling:>8}  "
              f"{r['check']}{left}")


# (label, row keys, vs-PyTorch target, ceiling target or None)
MUST_SHOW = [
    ("train step, no remat", ["train"], 1.5, 0.5),
    ("train step, with remat", ["train_remat"], 1.5, 0.5),
    ("time to first token, i2t / t2i", ["i2t_ttft", "t2i_ttft"], 1.5, None),
    ("decode tokens/s, batch 1", ["i2t_decode"], 1.3, 0.8),
    ("decode tokens/s, batch 1, int8 vs official fp32", ["int8_decode"], 3.0, 0.7),
    ("U-Net call (CFG 2 / stage 2) / VAE decode", ["unet", "unet_stage2", "vae"], 1.5, None),
    ("sampling 4 steps, both stages", ["stage1_4", "stage2_4"], 1.5, None),
    ("sampling 20 steps, both stages", ["stage1_20", "stage2_20"], 1.8, None),
    ("bf16 train step vs our fp32", ["bf16_train"], 1.8, None),
]


def must_show(rows: list[dict]) -> list[dict]:
    """Each target of issue 20 against the measured medians (the worst row of a group decides)."""
    by_key = {r["key"]: r for r in rows}
    out = []
    for label, keys, target, ceiling_target in MUST_SHOW:
        have = [by_key[k] for k in keys if k in by_key]
        item = dict(label=label, keys=keys, target=target, ceiling_target=ceiling_target,
                    ratios=[r["ratio_median"] for r in have], verdict="not measured", ceiling_verdict=None)
        if have:  # a group with rows missing (an --only run) has no verdict of its own
            item["verdict"] = ("MISS" if min(item["ratios"]) < target else
                               "PASS" if len(have) == len(keys) else "partial")
        if ceiling_target is not None and have:
            fractions = [r.get("ceiling_fraction") for r in have]
            item["ceilings"] = fractions
            if None not in fractions:
                item["ceiling_verdict"] = "PASS" if min(fractions) >= ceiling_target else "MISS"
        if keys == ["bf16_train"] and have:
            diff = have[0]["curve_max_rel_diff"]
            item["curve_max_rel_diff"] = diff
            item["ceiling_verdict"] = "PASS" if diff <= 0.02 else "MISS"
        out.append(item)
    return out


def print_must_show(items: list[dict]) -> None:
    print(f"\n{'Must show (issue 20)':<48} {'target':>8} {'measured':>16} {'':<6}  {'ceiling target':>14} "
          f"{'measured':>16}")
    for it in items:
        ratios = " / ".join(f"{r:.2f}x" for r in it["ratios"]) or "-"
        if "curve_max_rel_diff" in it:
            ceiling = f"{'loss <= 2%':>14} {it['curve_max_rel_diff']:>15.2%} {it['ceiling_verdict']}"
        elif it["ceiling_target"] is None:
            ceiling = f"{'-':>14}"
        else:
            fractions = " / ".join("-" if f is None else f"{f:.0%}" for f in it.get("ceilings", [])) or "-"
            ceiling = f"{'>= ' + format(it['ceiling_target'], '.0%'):>14} {fractions:>16} {it['ceiling_verdict'] or ''}"
        print(f"{it['label'][:48]:<48} {'>= ' + format(it['target'], '.1f') + 'x':>8} {ratios:>16} "
              f"{it['verdict']:<6}  {ceiling}")
