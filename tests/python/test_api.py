"""The binding against the C headers: the declarations cffi reads come from the preprocessed
public headers, every struct's size and field offsets match the C compiler's, constants
and enums are there, and a C error raises with the library's message."""

import os
import shutil
import subprocess

import pytest

import thermoe
from thermoe import _ffi
from thermoe._core import enum_name, enum_value
from thermoe._ffi import ffi, lib


def test_parse_api_keeps_only_thermoe_headers():
    text = "\n".join([
        '# 1 "/usr/include/stdint.h" 1',
        "typedef long int64_t;",
        "#define UINT8_MAX 255",
        '# 1 "include/thermoe/x.h" 1',
        "#define TMOE_A 0x10ull",
        '#define TMOE_S "v1"',
        "#define TMOE_EXPR (TMOE_A | 1)",
        "int tmoe_f(const char *fmt, ...) __attribute__((format(printf, 1, 2)));",
        "static inline float tmoe_g(float f) {",
        "    return { f }.x;",
        "}",
        "int tmoe_h(void);",
    ])
    decl, macros = _ffi.parse_api(text)
    assert "int64_t" not in decl and "UINT8_MAX" not in macros
    assert macros == {"TMOE_A": 16, "TMOE_S": "v1"}
    assert "__attribute__" not in decl and "tmoe_g" not in decl
    assert "int tmoe_f(const char *fmt, ...)" in decl and "int tmoe_h(void);" in decl


def test_declarations_follow_the_headers(source_dir):
    # every function a public header declares is in the binding
    import re

    for h in sorted((source_dir / "include" / "thermoe").glob("*.h")):
        for name in re.findall(r"\b(tmoe_[a-z0-9_]+)\s*\(", h.read_text()):
            if name in ("tmoe_round_f16",):  # static inline: no symbol to bind
                continue
            assert name in _ffi.CDEF, f"{h.name}: {name} missing from the binding"


def test_struct_layout_matches_the_compiler(source_dir, tmp_path):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc or not shutil.which(cc):
        pytest.skip("no C compiler to compare the struct layouts with")
    typedefs, _, _ = ffi.list_types()
    lines, expect = [], []
    for t in sorted(typedefs):
        ct = ffi.typeof(t)
        if ct.kind != "struct" or ct.fields is None:
            continue  # opaque handle
        lines.append(f'printf("{t} %zu\\n", sizeof({t}));')
        expect.append(f"{t} {ffi.sizeof(t)}")
        for name, f in ct.fields:
            lines.append(f'printf("{t}.{name} %zu\\n", offsetof({t}, {name}));')
            expect.append(f"{t}.{name} {f.offset}")
    assert len(expect) > 100
    src = tmp_path / "layout.c"
    headers = "".join(f'#include "thermoe/{h.name}"\n'
                      for h in sorted((source_dir / "include" / "thermoe").glob("*.h")))
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n" + headers
                   + "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = tmp_path / "layout"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run([cc, "-std=c11", "-I", str(source_dir / "include"), str(src), "-o", str(exe)],
                   check=True, env=env)
    got = subprocess.run([str(exe)], check=True, capture_output=True, text=True, env=env).stdout
    assert got.split("\n")[:-1] == expect


def test_constants_and_enums(source_dir):
    import re

    cmake = (source_dir / "CMakeLists.txt").read_text()
    assert f"project(thermoe VERSION {thermoe.__version__} " in cmake
    assert re.fullmatch(r"\d+\.\d+\.\d+", thermoe.__version__)
    assert _ffi.MACROS["TMOE_METER_MAX_DEVICES"] == 16
    assert _ffi.MACROS["TMOE_RUNLOG_CSV"] == "batches.csv"
    assert enum_value("tmoe_lr_schedule", "warmup_cosine") == lib.TMOE_LR_WARMUP_COSINE
    assert enum_value("tmoe_lr_schedule", "TMOE_LR_STEP") == lib.TMOE_LR_STEP
    assert enum_name("tmoe_energy_method", lib.TMOE_ENERGY_LATEST_POWER) == "latest_power"
    assert enum_name("tmoe_energy_method", lib.TMOE_ENERGY_SIM_EXACT) == \
        ffi.string(lib.tmoe_energy_method_name(lib.TMOE_ENERGY_SIM_EXACT)).decode()
    with pytest.raises(ValueError, match="expected one of"):
        enum_value("tmoe_route_strategy", "fastest")


def test_c_error_raises_with_its_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "thermoe.cost_model/1", "entries": [}')
    with pytest.raises(thermoe.ThermoeValueError) as e:
        thermoe.CostModel.load(bad)
    assert str(bad) in str(e.value) and e.value.code == lib.TMOE_EFORMAT
    with pytest.raises(thermoe.ThermoeError, match="No such file"):
        thermoe.CostModel.load(tmp_path / "absent.json")
