"""The C API of libthermoe as cffi sees it.

The declarations are not copied by hand: the build preprocesses the public headers
(include/thermoe/*.h) into ``thermoe_api.i`` with the C compiler, and this module keeps the
parts that come from thermoe's own headers, drops what cffi's parser does not take
(``__attribute__``, ``static inline`` bodies), hands the rest to ``ffi.cdef`` and opens the
shared library in cffi's ABI mode. A field added to a config struct in a header is therefore
in ``ffi`` after the next build, and the wrappers that map keyword arguments to config
fields by name (``Router(**config)``) pick it up without a change here.
tests/python/test_api.py compiles the headers and checks every struct's size and field
offsets as cffi laid them out against the C compiler's.

Where the files are looked for: ``THERMOE_LIBRARY`` / ``THERMOE_API`` in the environment
(a build tree: ctest sets both), else the copies installed beside this file by
``pip install``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Tuple

import cffi

_HERE = Path(__file__).resolve().parent
_LINEMARK = re.compile(r'^#\s*(\d+)\s+"([^"]*)"')
_DEFINE = re.compile(r"^#\s*define\s+(TMOE_[A-Z0-9_]+)\s+(.+?)\s*$")
_INT = re.compile(r"^\(?\s*(0[xX][0-9a-fA-F]+|\d+)\s*[uUlL]*\s*\)?$")
_STR = re.compile(r'^"([^"\\]*)"$')


def _is_thermoe_header(path: str) -> bool:
    p = path.replace("\\", "/")
    return "/thermoe/" in p and p.endswith(".h")


def _strip_balanced(text: str, start: int, open_ch: str, close_ch: str) -> int:
    """Index just past the group that opens at text[start] == open_ch."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} in the preprocessed headers")


def _drop_attributes(text: str) -> str:
    out, i = [], 0
    while True:
        j = text.find("__attribute__", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.index("(", j)
        i = _strip_balanced(text, k, "(", ")")


def _drop_inline_bodies(text: str) -> str:
    """Remove `static inline` function definitions (declarations of the library stay)."""
    out, i = [], 0
    while True:
        j = text.find("static inline", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k = text.index("{", j)
        i = _strip_balanced(text, k, "{", "}")


def parse_api(text: str) -> Tuple[str, Dict[str, Any]]:
    """Split the preprocessed headers (``cc -E -dD``) into the declarations that come from
    thermoe's own headers (for ``ffi.cdef``) and its ``#define TMOE_*`` constants that are
    plain integer or string literals (name -> int or str)."""
    keep, macros, ours = [], {}, False
    for line in text.splitlines():
        m = _LINEMARK.match(line)
        if m:
            ours = _is_thermoe_header(m.group(2))
            continue
        if not ours:
            continue
        if line.lstrip().startswith("#"):
            d = _DEFINE.match(line.strip())
            if d:
                val = d.group(2)
                mi, ms = _INT.match(val), _STR.match(val)
                if mi:
                    macros[d.group(1)] = int(mi.group(1), 0)
                elif ms:
                    macros[d.group(1)] = ms.group(1)
            continue
        keep.append(line)
    decl = _drop_inline_bodies(_drop_attributes("\n".join(keep)))
    return decl, macros


def _find(env: str, name: str) -> Path:
    p = os.environ.get(env)
    if p:
        path = Path(p)
        if not path.is_file():
            raise ImportError(f"thermoe: {env}={p}: no such file")
        return path
    path = _HERE / name
    if not path.is_file():
        raise ImportError(
            f"thermoe: {path} not found: install the package with `pip install .` from the "
            f"repository root, or point {env} at the file in a CMake build tree"
        )
    return path


def _load() -> Tuple[cffi.FFI, Any, Dict[str, Any], str]:
    api_path = _find("THERMOE_API", "thermoe_api.i")
    lib_path = _find("THERMOE_LIBRARY", "libthermoe.so")
    decl, macros = parse_api(api_path.read_text())
    f = cffi.FFI()
    f.cdef(decl)
    return f, f.dlopen(str(lib_path)), macros, decl


ffi, lib, MACROS, CDEF = _load()
