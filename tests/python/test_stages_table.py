"""bench/stages_table.py: bench_moe --short tables at several ring depths joined by row, the
best depth and its change against depth 0; rows at 512 tokens and rows missing at a depth
left out."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(ROOT, "bench", "stages_table.py")
HEAD = ("| what | shape | type | path | tokens | median us | GB/s | of copy | TFLOP/s | J/token |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n")


def row(what, typ, tokens, us):
    return f"| {what} | mixtral | {typ} | kernel | {tokens} | {us} | 1 | 1.0% | 1.00 | - |\n"


def write(d, depth, rows):
    (d / f"bench_short_st{depth}.md").write_text("card: x\n\n" + HEAD + "".join(rows))


def run(d):
    return subprocess.run([sys.executable, TABLE, str(d)], capture_output=True, text=True)


def test_best_depth_and_change(tmp_path):
    write(tmp_path, 0, [row("matrix", "q4", 1, "20.0"), row("matrix", "q4", 512, "400.0"),
                        row("expert", "fp16", 4, "100.0"), row("expert", "q2", 1, "9.0")])
    write(tmp_path, 4, [row("matrix", "q4", 1, "15.0"), row("matrix", "q4", 512, "300.0"),
                        row("expert", "fp16", 4, "101.0")])
    write(tmp_path, 6, [row("matrix", "q4", 1, "16.0"), row("expert", "fp16", 4, "102.0")])
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("| matrix") or l.startswith("| expert")]
    assert len(lines) == 2  # 512 tokens and the row missing at depths 4 and 6 left out
    q4 = [c.strip() for c in lines[0].strip("|").split("|")]
    assert q4[:5] == ["matrix", "mixtral", "q4", "kernel", "1"]
    assert q4[5:8] == ["20.0", "15.0", "16.0"]
    assert q4[8] == "4" and q4[9] == "-25.0%"
    f16 = [c.strip() for c in lines[1].strip("|").split("|")]
    assert f16[8] == "0" and f16[9] == "+0.0%"  # depth 0 stays best


def test_needs_depth_zero_and_another(tmp_path):
    write(tmp_path, 4, [row("matrix", "q4", 1, "15.0")])
    r = run(tmp_path)
    assert r.returncode != 0 and "bench_short_st0.md" in r.stderr
    write(tmp_path, 0, [row("matrix", "q4", 1, "20.0")])
    assert run(tmp_path).returncode == 0


def test_compare_two_tables(tmp_path):
    write(tmp_path, 0, [row("matrix", "q4", 1, "20.0"), row("matrix", "q4", 512, "400.0"),
                        row("expert", "fp16", 4, "100.0")])
    (tmp_path / "a8.md").write_text("card: x\n\n" + HEAD + row("matrix", "q4", 1, "15.0")
                                    + row("matrix", "q4", 512, "300.0"))
    r = subprocess.run([sys.executable, TABLE, "--compare", str(tmp_path / "bench_short_st0.md"),
                        str(tmp_path / "a8.md")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("| matrix") or l.startswith("| expert")]
    assert len(lines) == 1  # 512 tokens and the row only BASE has left out
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[5:] == ["20.0", "15.0", "-25.0%"]
    empty = tmp_path / "empty.md"
    empty.write_text("card: x\n")
    r = subprocess.run([sys.executable, TABLE, "--compare", str(empty), str(tmp_path / "a8.md")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no rows in common" in r.stderr
