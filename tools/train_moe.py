#!/usr/bin/env python3
"""Train thermoe's default model: a small MixtralForCausalLM (or, with --dense, the dense
MistralForCausalLM with the same active parameters) on token files, and score it.

Data: token files as tools/tokenize.py writes them (DESIGN.md "Real models"): --data DIR
holding train.tokens, validation.tokens, test.tokens and tokenizer.json (more test-*.tokens
there, e.g. one per domain, are scored too). Nothing is downloaded.

Training: random windows of --seq-len ids from the train file, --batch windows a step, every
token after the first predicted (transformers' shifted causal LM loss), plus, for the MoE,
--aux-coef x the router's load-balancing loss (output_router_logits). AdamW (betas 0.9,
0.95; weight decay on matrices only), linear warm-up then cosine decay to --min-lr-ratio x
--lr, gradient clipping at 1. bf16 autocast on CUDA with fp32 master weights; fp32 on the
CPU. --steps N fixes the schedule's length; with --time-budget-s T the length is calibrated
after 25 steps from the measured step time (and validation time): the number of steps that
fits T, or --steps N if that fits, and re-estimated at every validation from the pace so
far (until 90% of the schedule). --time-budget-s also stops the training loop once it has
run that long (then the schedule is cut short, which the metrics say); the model is saved
all the same. Every --eval-every steps the loss on
the first --eval-windows validation windows is logged; if an earlier one was lower than the
last by more than 0.01 nats (overfitting), those weights are saved instead of the last.

Outputs in --out: config.json, model.safetensors (bf16, save_pretrained), tokenizer.json,
loss.csv (the loss curve), metrics.json and, for the MoE, expert_usage.svg. metrics.json
holds the configuration, parameter counts, steps, tokens, wall times, and, computed by
transformers on the saved checkpoint loaded in fp32, the perplexity of the validation and
test files by DESIGN.md's rule -- consecutive windows of --seq-len, a final partial window
dropped, every token after the first of a window predicted, nll_mean over all predicted
tokens, perplexity = exp(nll_mean) -- which is what `thermoe eval --json` computes, plus
(MoE) the expert usage per layer: how often each expert is among a token's top-k, over every
token of every window of each test file.

usage:
  tools/train_moe.py --data .corpus/tokens --out out/moe --time-budget-s 420
  tools/train_moe.py --data .corpus/tokens --out out/dense --dense --steps N
  tools/train_moe.py --data D --out O --layers 2 --hidden 64 ... --steps 30   (smoke test)
"""
import os
import sys

# tools/tokenize.py would shadow the standard library's tokenize (which torch imports) while
# this folder is first on the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import csv  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

MAGIC, VERSION, HEADER_INTS = 20261206, 1, 256
CALIB_FROM, CALIB_TO = 5, 25  # steps timed to calibrate --steps 0


def log(msg):
    print(msg, flush=True)


def read_tokens(path):
    """(ids as int64 tensor, vocabulary size from the header, text bytes) of a token file."""
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(4 * HEADER_INTS), dtype="<i4")
    size = os.path.getsize(path)
    if (len(head) != HEADER_INTS or head[0] != MAGIC or head[1] != VERSION or head[4] != 4
            or size != 4 * HEADER_INTS + 4 * int(head[2])):
        raise SystemExit(f"train_moe: {path}: not a version-1 token file")
    ids = np.fromfile(path, dtype="<u4", count=int(head[2]), offset=4 * HEADER_INTS)
    return torch.from_numpy(ids.astype(np.int64)), int(head[3]), int(head[5])


def load_svg_module():
    spec = importlib.util.spec_from_file_location("expert_usage_svg",
                                                  os.path.join(HERE, "expert_usage_svg.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- model -------------------------------------------------------------------------------

def build_config(a, vocab):
    """The transformers config: Mixtral, or Mistral with top_k x expert_size for --dense.
    Only fields that exist in transformers 5.x's config classes."""
    common = dict(vocab_size=vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                  num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                  head_dim=a.hidden // a.heads, hidden_act="silu",
                  max_position_embeddings=a.seq_len, initializer_range=0.02,
                  rms_norm_eps=1e-5, rope_parameters={"rope_type": "default",
                                                      "rope_theta": a.rope_theta},
                  sliding_window=None, attention_dropout=0.0, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None, use_cache=True)
    if a.dense:
        return transformers.MistralConfig(intermediate_size=a.top_k * a.expert_size, **common)
    return transformers.MixtralConfig(intermediate_size=a.expert_size,
                                      num_local_experts=a.experts, num_experts_per_tok=a.top_k,
                                      router_aux_loss_coef=a.aux_coef, router_jitter_noise=0.0,
                                      output_router_logits=False, **common)


def param_counts(model, cfg, dense):
    """Parameters: all, active per token, in experts, in embedding + LM head."""
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    embed = sum(p.numel() for n, p in model.named_parameters()
                if "embed_tokens" in n or "lm_head" in n)
    if dense:
        active = total
    else:
        e, k = cfg.num_local_experts, cfg.num_experts_per_tok
        active = total - expert * (e - k) // e
    return {"total": total, "active_per_token": active, "experts": expert,
            "embedding_and_lm_head": embed, "bf16_bytes": 2 * total}


# --- schedule ----------------------------------------------------------------------------

def lr_at(step, total, a):
    """Linear warm-up over --warmup steps, then cosine to min_lr_ratio x lr at step total."""
    warm = max(1, min(a.warmup, total // 10 if total else a.warmup))
    if step < warm:
        return a.lr * (step + 1) / warm
    if not total:
        return a.lr
    t = min(1.0, (step - warm) / max(1, total - warm))
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


# --- evaluation --------------------------------------------------------------------------

@torch.no_grad()
def score(model, ids, seq_len, batch, device, moe_top_k=0, max_windows=0, autocast=None):
    """DESIGN.md's rule: consecutive windows of seq_len (partial one dropped), every token
    after the first of a window predicted. Returns nll_mean, perplexity, per-window stats
    and, when moe_top_k, the top-k selection counts per layer (layers, experts)."""
    n_win = len(ids) // seq_len
    if max_windows:
        n_win = min(n_win, max_windows)
    if n_win == 0:
        raise SystemExit(f"train_moe: fewer than {seq_len} tokens to score")
    win = ids[: n_win * seq_len].view(n_win, seq_len)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    per_window = []
    counts = None
    model.eval()
    for b in range(0, n_win, batch):
        x = win[b: b + batch].to(device, non_blocking=True)
        with (torch.autocast(device.type, dtype=autocast) if autocast
              else torch.autocast(device.type, enabled=False)):
            out = model(input_ids=x, use_cache=False,
                        **({"output_router_logits": True} if moe_top_k else {}))
        logp = F.log_softmax(out.logits.float(), dim=-1)
        tok = logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)  # (nb, seq_len - 1)
        nll_w = -tok.double().sum(dim=1)
        nll_sum += nll_w.sum()
        per_window.append(nll_w / (seq_len - 1))
        if moe_top_k:
            layer_counts = []
            for rl in out.router_logits:
                sel = torch.topk(rl.float(), moe_top_k, dim=-1).indices.reshape(-1)
                layer_counts.append(torch.bincount(sel, minlength=rl.shape[-1]))
            c = torch.stack(layer_counts).cpu()
            counts = c if counts is None else counts + c
    scored = n_win * (seq_len - 1)
    nll = float(nll_sum) / scored
    pw = torch.cat(per_window).cpu()
    res = {"windows": n_win, "seq_len": seq_len, "tokens_scored": scored, "nll_mean": nll,
           "perplexity": math.exp(nll)}
    if n_win > 1:
        # 95% interval over windows (normal quantile; thermoe uses Student t, the same to
        # three digits for the hundreds of windows here).
        half = 1.959964 * float(pw.std(unbiased=True)) / math.sqrt(n_win)
        res["perplexity_ci95"] = [math.exp(nll - half), math.exp(nll + half)]
    if counts is not None:
        res["topk_counts"] = counts.tolist()
    return res


def usage_summary(counts):
    """Fractions per layer and how far they are from uniform."""
    c = np.asarray(counts, dtype=np.float64)
    frac = c / c.sum(axis=1, keepdims=True)
    e = c.shape[1]
    ent = -(frac * np.log(np.where(frac > 0, frac, 1))).sum(axis=1)
    return {"counts": c.astype(np.int64).tolist(), "fractions": frac.round(6).tolist(),
            "max_over_uniform": (frac.max(axis=1) * e).round(4).tolist(),
            "entropy_over_log_e": (ent / math.log(e)).round(4).tolist()}


# --- main --------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the default MoE (MixtralForCausalLM) or "
                                 "its dense baseline on token files; save and score it.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with train/validation/test.tokens "
                    "and tokenizer.json")
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--dense", action="store_true", help="train the dense MistralForCausalLM "
                    "with intermediate_size = top_k x expert_size instead")
    g = ap.add_argument_group("architecture")
    g.add_argument("--layers", type=int, default=5)
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=2)
    g.add_argument("--experts", type=int, default=8)
    g.add_argument("--expert-size", type=int, default=128, help="intermediate size per expert")
    g.add_argument("--top-k", type=int, default=2)
    g.add_argument("--rope-theta", type=float, default=10000.0)
    g = ap.add_argument_group("training")
    g.add_argument("--seq-len", type=int, default=512, help="window (also "
                   "max_position_embeddings and the scoring window)")
    g.add_argument("--batch", type=int, default=64, help="windows per step")
    g.add_argument("--steps", type=int, default=0, help="schedule length (0: as many as fit "
                   "--time-budget-s; shortened to fit it when both are given)")
    g.add_argument("--time-budget-s", type=float, default=0, help="stop the training loop "
                   "after this many seconds (0: none)")
    g.add_argument("--lr", type=float, default=2e-3)
    g.add_argument("--min-lr-ratio", type=float, default=0.1)
    g.add_argument("--warmup", type=int, default=200)
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--aux-coef", type=float, default=0.01, help="router_aux_loss_coef")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--eval-every", type=int, default=250)
    g.add_argument("--eval-windows", type=int, default=64)
    g.add_argument("--score-batch", type=int, default=16, help="windows per forward when "
                   "scoring")
    g.add_argument("--device", default="auto", help="auto, cuda or cpu")
    g.add_argument("--experts-impl", default="", help="transformers experts_implementation "
                   "(eager, grouped_mm, batched_mm; default: transformers' choice)")
    a = ap.parse_args(argv)
    if not a.steps and not a.time_budget_s:
        ap.error("give --steps or --time-budget-s (or both)")
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("--hidden must divide by --heads and --heads by --kv-heads")

    wall0 = time.time()
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if a.device == "auto" else a.device))
    cuda = device.type == "cuda"
    torch.manual_seed(a.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train_ids, vocab, _ = read_tokens(os.path.join(a.data, "train.tokens"))
    val_ids, v2, _ = read_tokens(os.path.join(a.data, "validation.tokens"))
    tok_json = os.path.join(a.data, "tokenizer.json")
    if v2 != vocab or not os.path.exists(tok_json):
        raise SystemExit("train_moe: validation.tokens and train.tokens disagree on the "
                         "vocabulary, or tokenizer.json is missing")
    test_files = {"test": os.path.join(a.data, "test.tokens")}
    for p in sorted(glob.glob(os.path.join(a.data, "test-*.tokens"))):
        test_files[os.path.basename(p)[: -len(".tokens")]] = p
    log(f"train {len(train_ids)} tokens, validation {len(val_ids)}, vocabulary {vocab}, "
        f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if cuda else ""))

    cfg = build_config(a, vocab)
    cls = transformers.MistralForCausalLM if a.dense else transformers.MixtralForCausalLM
    kw = {"experts_implementation": a.experts_impl} if a.experts_impl and not a.dense else {}
    autocast = torch.bfloat16 if cuda else None

    def make_model():
        torch.manual_seed(a.seed)  # the same initial weights whatever the implementation
        return cls._from_config(cfg, dtype=torch.float32, **kw).to(device)

    model = make_model()
    if not a.dense:
        # One forward and backward as training runs them (bf16 autocast on fp32 weights),
        # so that an experts implementation this torch/GPU cannot run falls back to eager
        # now rather than failing the run.
        try:
            x = train_ids[: 2 * a.seq_len].view(2, a.seq_len).to(device)
            with (torch.autocast(device.type, dtype=autocast) if autocast
                  else torch.autocast(device.type, enabled=False)):
                out = model(input_ids=x, labels=x, use_cache=False, output_router_logits=True)
            out.loss.backward()
            model.zero_grad(set_to_none=True)
        except Exception as e:  # noqa: BLE001 -- any failure of the fused path
            if kw.get("experts_implementation") == "eager":
                raise
            log(f"experts implementation "
                f"{getattr(model.config, '_experts_implementation', None)} failed "
                f"({type(e).__name__}: {str(e)[:200]}); using eager")
            kw = {"experts_implementation": "eager"}
            model = make_model()
    counts = param_counts(model, cfg, a.dense)
    experts_impl = getattr(model.config, "_experts_implementation", None)
    log(f"{cls.__name__}: {counts['total']:,} parameters, {counts['active_per_token']:,} "
        f"active per token, bf16 {counts['bf16_bytes'] / 1e6:.2f} MB"
        + ("" if a.dense else f", experts implementation {experts_impl}"))

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if cuda else {}))
    gen = torch.Generator().manual_seed(a.seed)

    os.makedirs(a.out, exist_ok=True)
    csv_f = open(os.path.join(a.out, "loss.csv"), "w", newline="")
    w = csv.writer(csv_f)
    w.writerow(["step", "tokens", "elapsed_s", "lr", "loss", "lm_loss", "aux_loss", "val_loss"])

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def val_loss():
        r = score(model, val_ids, a.seq_len, a.score_batch, device,
                  max_windows=a.eval_windows, autocast=autocast)
        model.train()
        return r["nll_mean"]

    total_steps = a.steps
    tokens_per_step = a.batch * a.seq_len
    best = {"val": float("inf"), "step": -1, "state": None}
    sync()
    t0 = time.time()
    v0 = val_loss()
    sync()
    eval_s = time.time() - t0
    w.writerow([0, 0, f"{eval_s:.3f}", 0, "", "", "", f"{v0:.5f}"])
    log(f"step 0: validation loss {v0:.4f} ({eval_s:.1f} s for {a.eval_windows} windows)")

    model.train()
    step, stop_reason = 0, "steps"
    acc = torch.zeros(3, device=device)
    acc_n, t_calib, t_last, tok_last = 0, None, time.time(), 0
    while True:
        if total_steps and step >= total_steps:
            break
        elapsed = time.time() - t0
        if a.time_budget_s and elapsed >= a.time_budget_s:
            stop_reason = "time budget"
            break
        lr = lr_at(step, total_steps, a)
        for grp in opt.param_groups:
            grp["lr"] = lr
        starts = torch.randint(0, len(train_ids) - a.seq_len, (a.batch,), generator=gen)
        x = torch.stack([train_ids[s: s + a.seq_len] for s in starts.tolist()])
        x = x.to(device, non_blocking=True)
        with (torch.autocast(device.type, dtype=autocast) if autocast
              else torch.autocast(device.type, enabled=False)):
            out = model(input_ids=x, labels=x, use_cache=False,
                        **({} if a.dense else {"output_router_logits": True}))
        loss = out.loss
        aux = out.aux_loss.float() if getattr(out, "aux_loss", None) is not None \
            else torch.zeros((), device=device)
        lm = loss.detach().float() - (0 if a.dense else a.aux_coef) * aux.detach()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        acc += torch.stack([loss.detach().float(), lm, aux.detach()])
        acc_n += 1

        if a.time_budget_s and step == CALIB_FROM:
            sync()
            t_calib = time.time()
        if a.time_budget_s and step == CALIB_TO:
            sync()
            per_step = (time.time() - t_calib) / (CALIB_TO - CALIB_FROM)
            left = 0.97 * a.time_budget_s - (time.time() - t0)  # 3% for drift
            fit = CALIB_TO + int(left / (per_step + eval_s / a.eval_every))
            if not a.steps or fit < a.steps:
                total_steps = fit
                log(f"calibrated: {per_step * 1e3:.1f} ms a step -> a schedule of "
                    f"{total_steps} steps fits {a.time_budget_s:.0f} s"
                    + (f" (shortened from --steps {a.steps})" if a.steps else ""))

        if (a.time_budget_s and t_calib is not None and step > CALIB_TO
                and step % a.eval_every == 0 and step < 0.9 * total_steps):
            # Re-estimate from the pace since calibration (validation included), so that
            # the schedule ends with the budget even if steps got slower or faster.
            pace = (time.time() - t_calib) / (step - CALIB_FROM)
            fit = step + int((0.97 * a.time_budget_s - (time.time() - t0)) / pace)
            fit = max(step + 1, fit if not a.steps else min(fit, a.steps))
            if fit != total_steps:
                log(f"step {step}: {pace * 1e3:.1f} ms a step so far -> schedule of {fit} "
                    f"steps (was {total_steps})")
                total_steps = fit

        v = None
        if step % a.eval_every == 0 or (total_steps and step == total_steps):
            v = val_loss()
            if v < best["val"]:
                best.update(val=v, step=step,
                            state={k: t.detach().clone() for k, t in model.state_dict().items()})
        if step % a.log_every == 0 or v is not None:
            m = (acc / acc_n).tolist()
            now = time.time()
            tps = (step * tokens_per_step - tok_last) / max(1e-9, now - t_last)
            t_last, tok_last = now, step * tokens_per_step
            w.writerow([step, step * tokens_per_step, f"{now - t0:.3f}", f"{lr:.6g}",
                        f"{m[0]:.5f}", f"{m[1]:.5f}", f"{m[2]:.5f}",
                        "" if v is None else f"{v:.5f}"])
            csv_f.flush()
            log(f"step {step}/{total_steps or '?'} loss {m[0]:.4f} lm {m[1]:.4f} "
                f"aux {m[2]:.4f} lr {lr:.2e} {tps / 1e3:.0f}k tok/s {now - t0:.0f} s"
                + ("" if v is None else f" | validation {v:.4f}"))
            acc.zero_()
            acc_n = 0
    sync()
    train_s = time.time() - t0
    last_v = val_loss()
    if last_v < best["val"]:
        best.update(val=last_v, step=step, state=None)
    saved_step = step
    if best["state"] is not None and best["step"] != step and best["val"] < last_v - 0.01:
        model.load_state_dict(best["state"])
        saved_step = best["step"]
        log(f"validation loss was lowest at step {best['step']} ({best['val']:.4f} vs "
            f"{last_v:.4f} at the end): saving those weights")
    csv_f.close()
    log(f"stopped after {step} steps ({stop_reason}), {train_s:.1f} s, "
        f"{step * tokens_per_step / 1e6:.1f} M tokens ({step * tokens_per_step / len(train_ids):.1f} "
        f"passes over train)")

    # Save as a hub checkpoint in bf16, as a user's Mixtral looks.
    model.config.output_router_logits = False
    model = model.to(torch.bfloat16)
    model.save_pretrained(a.out)
    shutil.copyfile(tok_json, os.path.join(a.out, "tokenizer.json"))
    del model, opt, best
    if cuda:
        torch.cuda.empty_cache()

    # Score the saved checkpoint as thermoe does: bf16 weights loaded as fp32, fp32 compute.
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    m32 = cls.from_pretrained(a.out, dtype=torch.float32, **kw).to(device)
    t_eval = time.time()
    results = {"validation": score(m32, val_ids, a.seq_len, a.score_batch, device)}
    usage = {}
    for name, path in test_files.items():
        ids, v3, _ = read_tokens(path)
        if v3 != vocab:
            raise SystemExit(f"train_moe: {path}: vocabulary {v3}, the model's is {vocab}")
        r = score(m32, ids, a.seq_len, a.score_batch, device, moe_top_k=0 if a.dense else a.top_k)
        if "topk_counts" in r:
            usage[name] = usage_summary(r.pop("topk_counts"))
        results[name] = r
    eval_s_final = time.time() - t_eval
    doms = [n for n in usage if n.startswith("test-")]
    if len(doms) == 2:
        # How differently the two domains use the experts: total variation distance per
        # layer between their selection shares (0 = same use, 1 = disjoint experts).
        p = np.asarray(usage[doms[0]]["fractions"])
        q = np.asarray(usage[doms[1]]["fractions"])
        usage["domain_total_variation"] = {"between": doms,
                                           "per_layer": (0.5 * np.abs(p - q).sum(axis=1)).round(4).tolist()}
    for name, r in results.items():
        log(f"{name}: perplexity {r['perplexity']:.4f} (nll {r['nll_mean']:.5f}, "
            f"{r['tokens_scored']} tokens scored, {r['windows']} windows of {r['seq_len']})")

    st = os.path.getsize(os.path.join(a.out, "model.safetensors"))
    metrics = {
        "model_type": cfg.model_type, "architecture": cls.__name__,
        "num_experts": None if a.dense else a.experts,
        "top_k": None if a.dense else a.top_k,
        "config": {k: getattr(a, k) for k in ("layers", "hidden", "heads", "kv_heads",
                                              "experts", "expert_size", "top_k",
                                              "rope_theta")},
        "intermediate_size": cfg.intermediate_size, "vocab_size": vocab,
        "parameters": counts, "model_safetensors_bytes": st,
        "experts_implementation": None if a.dense else experts_impl,
        "training": {"seq_len": a.seq_len, "batch": a.batch, "tokens_per_step": tokens_per_step,
                     "steps": step, "schedule_steps": total_steps, "stop": stop_reason,
                     "saved_step": saved_step,
                     "tokens": step * tokens_per_step,
                     "passes_over_train": step * tokens_per_step / len(train_ids),
                     "train_tokens": len(train_ids), "lr": a.lr,
                     "min_lr_ratio": a.min_lr_ratio, "warmup": a.warmup,
                     "weight_decay": a.weight_decay, "betas": [0.9, 0.95], "grad_clip": 1.0,
                     "aux_coef": None if a.dense else a.aux_coef, "seed": a.seed,
                     "precision": "bf16 autocast, fp32 weights" if cuda else "fp32",
                     "time_budget_s": a.time_budget_s, "train_loop_s": round(train_s, 2),
                     "final_validation_loss_subset": last_v},
        "eval": {"precision": "fp32 (bf16 checkpoint loaded as fp32, TF32 off)",
                 "rule": "DESIGN.md: consecutive windows of seq_len, partial window dropped, "
                         "every token after the first predicted", "seconds": round(eval_s_final, 2),
                 **results},
        "expert_usage": usage,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
        "wall_s": None,
    }
    metrics["wall_s"] = round(time.time() - wall0, 2)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    if usage:
        load_svg_module().write(metrics, os.path.join(a.out, "expert_usage.svg"))
        for name, u in usage.items():
            if "fractions" in u:
                log(f"expert usage on {name}: max/uniform per layer {u['max_over_uniform']}, "
                    f"entropy/log E {u['entropy_over_log_e']}")
        if "domain_total_variation" in usage:
            tv = usage["domain_total_variation"]
            log(f"expert usage, total variation between {' and '.join(tv['between'])} per "
                f"layer: {tv['per_layer']}")
    log(f"wrote {a.out} ({st / 1e6:.2f} MB model.safetensors), wall {metrics['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
