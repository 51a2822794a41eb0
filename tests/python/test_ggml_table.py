"""bench/ggml_table.py: joins bench_moe --short rows and test-backend-ops perf lines (console
format, colour codes included) by op, type and tokens."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "bench", "ggml_table.py")

OURS = """| what | shape | type | path | tokens | median us | GB/s | of copy | TFLOP/s | J/token |
|---|---|---|---|---|---|---|---|---|---|
| matrix 4096x14336 | mixtral | q4 | kernel | 1 | 20.0 | 1500 | 50.0% | 5.87 | - |
| matrix 4096x14336 | mixtral | q4 | kernel, one copy (L2-warm) | 1 | 16.0 | 1800 | 60.0% | 7.34 | - |
| matrix 4096x14336 | mixtral | fp16 | kernel | 8 | 50.0 | 2300 | 80.0% | 18.8 | - |
| MUL_MAT_ID 768x2048 top-8/128 | fine | fp16 | kernel | 8 | 60.0 | 2000 | 70.0% | 1.7 | - |
| MUL_MAT_ID 768x2048 top-8/128 | fine | fp16 | kernel, tile for the batch | 64 | 99.0 | 2000 | 70.0% | 1.7 | - |
"""
GGML = ("  MUL_MAT(type_a=q4_0,type_b=f32,m=4096,n=1,k=14336,bs=[1,1],nr=[1,1],per=[0,1,2,3],"
        "k_v=0,o=1,src_overlap=0):     8192 runs -    14.70 us/run -  117.44 MFLOP/run - "
        "\x1b[1;34m  7.99 TFLOPS\x1b[0m\n"
        "  MUL_MAT(type_a=q4_K,type_b=f32,m=4096,n=1,k=14336,bs=[1,1],nr=[1,1],per=[0,1,2,3],"
        "k_v=0,o=1,src_overlap=0):     8192 runs -    32.00 us/run - x\n"
        "  MUL_MAT(type_a=f16,type_b=f32,m=4096,n=8,k=14336,bs=[1,1],nr=[1,1],per=[0,1,2,3],"
        "k_v=0,o=1,src_overlap=0): not supported\n"
        "  MUL_MAT_ID(type_a=f16,type_b=f32,n_mats=128,n_used=8,b=0,m=768,n=8,k=2048):"
        "     1000 runs -    64.30 us/run - x\n")


def run(tmp_path, ours, ggml):
    o, g = tmp_path / "ours.md", tmp_path / "ggml.txt"
    o.write_text(ours)
    g.write_text(ggml)
    return subprocess.run([sys.executable, TABLE, str(o), str(g)], capture_output=True,
                          text=True)


def test_joins_by_op_type_and_tokens(tmp_path):
    r = run(tmp_path, OURS, GGML)
    assert r.returncode == 0, r.stderr
    rows = [l for l in r.stdout.splitlines() if l.startswith("| MUL_MAT")]
    # q4 at 1 token against q4_0 and q4_K; our faster (one-copy) row is the one compared
    assert "| MUL_MAT | q4 | q4_0 | 1 | 20.0 | 16.0 | 14.7 | 0.92 | ggml |" in rows
    assert "| MUL_MAT | q4 | q4_K | 1 | 20.0 | 16.0 | 32.0 | 2.00 | ours |" in rows
    assert "| MUL_MAT_ID | fp16 | f16 | 8 | 60.0 |  | 64.3 | 1.07 | ours |" in rows
    # fp16 at 8 tokens: ggml's line says not supported, so no row
    assert not any("| fp16 | f16 | 8 | 50.0" in l for l in rows)
    assert len(rows) == 3


def test_empty_inputs_fail_with_the_file_named(tmp_path):
    r = run(tmp_path, OURS, "nothing here\n")
    assert r.returncode != 0 and "ggml.txt" in r.stderr
    r = run(tmp_path, "no table\n", GGML)
    assert r.returncode != 0 and "ours.md" in r.stderr
