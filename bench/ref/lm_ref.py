"""transformers' MixtralForCausalLM with lm_bench's shape (random init, bf16, one GPU, no
download): decode tokens/s at batch 1, 8, 64 after a 32-token prompt (model.generate with its
KV cache, the prompt's time subtracted) and prefill tokens/s at 512. Prints markdown rows
in lm_bench's format (no floor column: the bf16 weights read the same bytes as fp16).
usage: python3 bench/ref/lm_ref.py [--layers N] [--steps N]"""
import argparse
import time

import torch
from transformers import MixtralConfig, MixtralForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=16)
    a = ap.parse_args()
    cfg = MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                        num_hidden_layers=a.layers, num_attention_heads=32,
                        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2,
                        max_position_embeddings=4096, rope_theta=1e6, sliding_window=None)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MixtralForCausalLM(cfg).to(torch.bfloat16).eval()
    dev = "cuda"

    def gen(B, n):
        ids = torch.randint(0, 32000, (B, 32), device=dev)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.inference_mode():
        for B in (1, 8, 64):
            gen(B, 2)  # warm-up
            t1 = gen(B, 1)
            tn = gen(B, a.steps)
            tps = B * (a.steps - 1) / max(tn - t1, 1e-9)
            print(f"| transformers bf16 | decode, batch {B} | {tps:.1f} | | |", flush=True)
        ids = torch.randint(0, 32000, (1, 512), device=dev)
        best = 1e30
        for rep in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(ids, use_cache=True)
            torch.cuda.synchronize()
            if rep:
                best = min(best, time.perf_counter() - t0)
        print(f"| transformers bf16 | prefill 512 | {512 / best:.1f} | | |", flush=True)


if __name__ == "__main__":
    main()
