"""PyTorch reference of the MoE layer of bench_moe, written the way a PyTorch user would:
fp16 experts through torch matmul, q4/q2 experts unpacked bitwise to fp16 (then scaled per
group of 128) and multiplied. Same shapes and token counts as bench/bench_moe.c; median of
CUDA-event timings; weights rotated over copies so one call reads > 256 MB of distinct
weights (or all of its weights from DRAM). Prints markdown rows.

Run on the GPU machine: python3 bench/ref/moe_ref.py [--quick]"""
import statistics
import sys

import torch
import torch.nn.functional as F

DEV = "cuda"
G = 128
QUICK = "--quick" in sys.argv
TOKENS = [1, 4, 16, 64, 256, 1024]
SHAPES = [("mixtral", 4096, 14336, 8, 2), ("fine", 2048, 768, 128, 8)]


def median_ms(fn, reps=20, warm=3):
    for _ in range(warm):
        fn()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


def unpack(q, scales, bits, out, inn):
    """packed uint8 (out, inn*bits/8) + fp16 scales (out, inn/G) -> fp16 (out, inn)"""
    if bits == 4:
        v = torch.stack([q & 0xF, q >> 4], dim=-1).reshape(out, inn).to(torch.int8)
        v = torch.where(v > 7, v - 16, v)
    else:
        v = torch.stack([(q >> (2 * j)) & 3 for j in range(4)], dim=-1).reshape(out, inn).to(torch.int8)
        v = torch.where(v > 1, v - 4, v)
    w = v.to(torch.float16).reshape(out, inn // G, G) * scales.reshape(out, inn // G, 1)
    return w.reshape(out, inn)


def make_expert(kind, D, Fd):
    a1, a2 = 1.0 / D ** 0.5, 1.0 / Fd ** 0.5
    if kind == "fp16":
        return (torch.empty(2 * Fd, D, device=DEV, dtype=torch.float16).uniform_(-a1, a1),
                torch.empty(D, Fd, device=DEV, dtype=torch.float16).uniform_(-a2, a2))
    bits = 4 if kind == "q4" else 2
    q1 = torch.randint(0, 256, (2 * Fd, D * bits // 8), device=DEV, dtype=torch.uint8)
    q2 = torch.randint(0, 256, (D, Fd * bits // 8), device=DEV, dtype=torch.uint8)
    s1 = torch.empty(2 * Fd, D // G, device=DEV, dtype=torch.float16).uniform_(a1 / 8, a1 / 4)
    s2 = torch.empty(D, Fd // G, device=DEV, dtype=torch.float16).uniform_(a2 / 8, a2 / 4)
    return (q1, s1, q2, s2, bits)


def expert_fwd(kind, ex, x, D, Fd):
    if kind == "fp16":
        w1, w2 = ex
    else:
        q1, s1, q2, s2, bits = ex
        w1 = unpack(q1, s1, bits, 2 * Fd, D)
        w2 = unpack(q2, s2, bits, D, Fd)
    h = x @ w1.t()
    a = F.silu(h[:, :Fd]) * h[:, Fd:]
    return a @ w2.t()


def layer(kind, experts, wg, x, E, k, D, Fd):
    logits = (x @ wg.t()).float()
    p = torch.softmax(logits, dim=-1)
    w, idx = torch.topk(p, k, dim=-1)
    w = w / w.sum(dim=-1, keepdim=True)
    y = torch.zeros(x.shape[0], D, device=DEV, dtype=torch.float32)
    flat = idx.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=E).tolist()
    tok = order // k
    wflat = w.reshape(-1)[order]
    off = 0
    for e in range(E):
        n = counts[e]
        if n == 0:
            continue
        t = tok[off:off + n]
        ye = expert_fwd(kind, experts[e], x[t], D, Fd).float()
        y.index_add_(0, t, ye * wflat[off:off + n, None])
        off += n
    return y


def main():
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    print(f"# PyTorch reference, torch {torch.__version__}, {props.name}\n")
    src = torch.empty(1 << 29, device=DEV, dtype=torch.float16)
    dst = torch.empty_like(src)
    cms = median_ms(lambda: dst.copy_(src))
    copy_gbs = 2 * (1 << 30) / (cms * 1e-3) / 1e9
    print(f"copy bandwidth (1 GiB D2D, read + write): {copy_gbs:.0f} GB/s\n")
    del src, dst
    print("| what | shape | type | path | tokens | median us | GB/s | of copy | TFLOP/s | J/token |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, D, Fd, E, k in SHAPES:
        for kind in ("fp16", "q4", "q2"):
            ex0 = make_expert(kind, D, Fd)
            ebytes = sum(t.numel() * t.element_size() for t in ex0 if torch.is_tensor(t))
            copies = max(1, min(8, -(-(256 << 20) // (ebytes * k))))
            while copies > 1 and ebytes * E * copies > (6 << 30):
                copies -= 1
            banks = [[ex0 if (c == 0 and e == 0) else make_expert(kind, D, Fd) for e in range(E)]
                     for c in range(copies)]
            wg = torch.empty(E, D, device=DEV, dtype=torch.float16).uniform_(-0.05, 0.05)
            xs = torch.empty(1024, D, device=DEV, dtype=torch.float16).uniform_(-1, 1)
            for T in TOKENS:
                if QUICK and T not in (1, 256):
                    continue
                x = xs[:T]
                it = [0]

                def one_expert():
                    c = it[0] % (copies * E)
                    it[0] += 1
                    expert_fwd(kind, banks[c // E][c % E], x, D, Fd)

                ms = median_ms(one_expert)
                gbs = (ebytes + T * D * 6) / (ms * 1e-3) / 1e9
                tf = 2 * T * 3 * Fd * D / (ms * 1e-3) / 1e12
                print(f"| expert | {name} | {kind} | torch | {T} | {ms * 1e3:.1f} | {gbs:.0f} | "
                      f"{100 * gbs / copy_gbs:.1f}% | {tf:.2f} | - |", flush=True)

                def one_layer():
                    c = it[0] % copies
                    it[0] += 1
                    layer(kind, banks[c], wg, x, E, k, D, Fd)

                ms = median_ms(one_layer, reps=10 if T >= 256 else 20)
                logits = (x @ wg.t()).float()
                used = int((torch.bincount(torch.topk(logits, k, dim=-1).indices.reshape(-1),
                                           minlength=E) > 0).sum())
                gbs = ebytes * used / (ms * 1e-3) / 1e9
                tf = 2 * T * k * 3 * Fd * D / (ms * 1e-3) / 1e12
                print(f"| layer step | {name} | {kind} | torch ({used} experts hit) | {T} | "
                      f"{ms * 1e3:.1f} | {gbs:.0f} | {100 * gbs / copy_gbs:.1f}% | {tf:.2f} | - |",
                      flush=True)
            del banks, ex0
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
