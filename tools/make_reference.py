#!/usr/bin/env python3
"""Build the small reference checkpoints under tests/data/lm and record what transformers
computes on them, so the C tests can check the CPU decoder without torch.

For each family (mixtral, olmoe, qwen2_moe, qwen3_moe) a random model with deliberately
unusual shapes is built with transformers' own classes and written with save_pretrained (no
download): head_dim different from hidden/heads where the family allows it, GQA ratio 3, a
vocabulary that is not a power of two, an expert count that is not a power of two, a dense
layer between MoE layers (Qwen), routers scaled up so routing is decisive. One model is
saved in bf16 (the reference then runs on the bf16-rounded weights in fp32), one sharded
(index + shards), one with the stacked expert tensors that transformers 5 holds in memory.

Recorded per model in expected.json: the logits of the first `logit_tokens` ids of the token
file (expected_logits.f32, little-endian float32, row-major (tokens, vocab)), their standard
deviation, the perplexity of the whole token file by DESIGN.md's rule (windows of seq_len,
final partial window dropped) and the greedy continuation of a prompt.

usage: tools/make_reference.py [--out tests/data/lm]   (needs torch, transformers, tokenizers)
"""
import os
import sys

# tools/tokenize.py would shadow the standard library's tokenize (which torch imports) while
# this folder is first on the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402



def _load_tokenize():
    """tools/tokenize.py under another module name (its own would shadow the standard
    library's tokenize)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("thermoe_tokenize",
                                                  os.path.join(HERE, "tokenize.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tokenize_text = _load_tokenize()


def train_tiny_tokenizer(text, vocab_size):
    """A character-level BPE trained on text, vocabulary at most vocab_size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>"])
    tok.train_from_iterator([text], trainer)
    return tok

SEQ_LEN = 32
LOGIT_TOKENS = 20
PROMPT = 10
NEW = 8
COMMON = dict(vocab_size=211, hidden_size=36, num_attention_heads=6, num_key_value_heads=2,
              max_position_embeddings=256, bos_token_id=None, eos_token_id=None,
              pad_token_id=None, tie_word_embeddings=False)

TEXT = """The river ran low that autumn, and the mill stood quiet for the first time in forty
years. Children crossed the stones where the water had been deep, and the miller's daughter
counted the fish that were left in the pools: seven, then nine, then only three. Her father
said the rain would come back, as it always had, but he said it the way people say things
they need to hear. In the village the talk was of wells and of the price of flour. A man from
the county came with a map and a long measuring chain, and he walked the banks for two days,
writing numbers in a small green book. He told nobody what the numbers meant. On the third
day it rained, softly at first and then for a week without stopping, and the wheel turned
again, slow and uneven, like someone waking from a long sleep. The daughter went down to the
pools and found them joined into one stream, and she could no longer count the fish at all.
"""


def families():
    """(name, config class, model class, config kwargs, how it is saved)."""
    return [
        ("mixtral", transformers.MixtralConfig, transformers.MixtralForCausalLM,
         dict(head_dim=10, intermediate_size=20, num_hidden_layers=2, num_local_experts=5,
              num_experts_per_tok=2, sliding_window=16), "bf16"),
        ("olmoe", transformers.OlmoeConfig, transformers.OlmoeForCausalLM,
         dict(intermediate_size=20, num_hidden_layers=2, num_experts=7, num_experts_per_tok=3,
              norm_topk_prob=False, clip_qkv=2.0), "fp32"),
        ("qwen2_moe", transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM,
         dict(head_dim=10, intermediate_size=28, moe_intermediate_size=12,
              shared_expert_intermediate_size=16, num_hidden_layers=3, num_experts=6,
              num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[1]), "fp32"),
        ("qwen3_moe", transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM,
         dict(head_dim=10, intermediate_size=28, moe_intermediate_size=12, num_hidden_layers=3,
              num_experts=7, num_experts_per_tok=2, norm_topk_prob=True, mlp_only_layers=[1]),
         "sharded"),
    ]


def randomize(model, gen):
    """Weights with a real signal (transformers' 0.02 init makes every logit nearly equal):
    matrices ~ N(0, 1/fan_in), norms 1 + N(0, 0.1), biases N(0, 0.1), routers scaled so that
    routing is decisive."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "bias" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1]
                scale = 6.0 if name.endswith("gate.weight") and "shared" not in name else 1.0
                p.copy_(scale * torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))


def window_nll(model, ids):
    """DESIGN.md's rule: windows of SEQ_LEN, every token after the first predicted."""
    nll, n = 0.0, 0
    for w in range(len(ids) // SEQ_LEN):
        x = torch.tensor([ids[w * SEQ_LEN:(w + 1) * SEQ_LEN]])
        logits = model(x).logits[0].double()
        lp = torch.log_softmax(logits, dim=-1)
        tgt = x[0, 1:]
        nll -= lp[:-1].gather(1, tgt[:, None]).sum().item()
        n += SEQ_LEN - 1
    return nll / n, n


def save(model, kind, path):
    if kind == "bf16":
        model.to(torch.bfloat16).save_pretrained(path)
        model.to(torch.float32)
    elif kind == "sharded":
        model.save_pretrained(path, max_shard_size="60KB")
    else:
        model.save_pretrained(path)


def save_stacked(model, src, path):
    """The in-memory state dict of transformers 5 (experts.gate_up_proj / down_proj)."""
    os.makedirs(path, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), path)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


def build(out, name, cfg_cls, model_cls, kw, kind, ids, seed):
    gen = torch.Generator().manual_seed(seed)
    cfg = cfg_cls(**COMMON, **kw)
    model = model_cls(cfg).eval()
    randomize(model, gen)
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    save(model, kind, path)
    shutil.copy(os.path.join(out, "tokenizer.json"), path)
    # the reference runs what was saved, in fp32 (bf16 weights widened exactly)
    model = model_cls.from_pretrained(path, dtype=torch.float32,
                                      attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids[:LOGIT_TOKENS]])).logits[0].float()
        nll, scored = window_nll(model, ids)
        gen_ids = model.generate(torch.tensor([ids[:PROMPT]]), max_new_tokens=NEW,
                                 do_sample=False)[0, PROMPT:].tolist()
    with open(os.path.join(path, "expected_logits.f32"), "wb") as f:
        f.write(struct.pack("<%df" % logits.numel(), *logits.flatten().tolist()))
    exp = {
        "family": name, "saved": kind, "seed": seed,
        "transformers": transformers.__version__, "torch": torch.__version__,
        "logit_tokens": LOGIT_TOKENS, "logits_std": logits.std().item(),
        "seq_len": SEQ_LEN, "tokens_scored": scored, "nll_mean": nll,
        "perplexity": math.exp(nll), "prompt_tokens": PROMPT, "greedy": gen_ids,
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    if name == "olmoe":
        spath = os.path.join(out, "olmoe_stacked")
        shutil.rmtree(spath, ignore_errors=True)
        save_stacked(model, path, spath)
        for f in ("expected.json", "expected_logits.f32"):
            shutil.copy(os.path.join(path, f), spath)
    print(f"{name}: {kind}, ppl {exp['perplexity']:.4f} over {scored} tokens, "
          f"logit std {exp['logits_std']:.4f}, greedy {gen_ids}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "lm"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    text_path = os.path.join(a.out, "text.txt")
    with open(text_path, "w") as f:
        f.write(TEXT)
    tok = train_tiny_tokenizer(TEXT, COMMON["vocab_size"])
    tok.save(os.path.join(a.out, "tokenizer.json"))
    tokenize_text.main(["--tokenizer", os.path.join(a.out, "tokenizer.json"),
                        "--vocab-size", str(COMMON["vocab_size"]),
                        "--out", os.path.join(a.out, "text.tokens"), text_path])
    ids = tokenize_text.read_tokens(os.path.join(a.out, "text.tokens"))
    for i, (name, cfg_cls, model_cls, kw, kind) in enumerate(families()):
        build(a.out, name, cfg_cls, model_cls, kw, kind, ids, 1000 + i)


if __name__ == "__main__":
    main()
