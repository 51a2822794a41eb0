"""Errors, enum names and array conversion shared by the wrappers."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

import numpy as np

from ._ffi import ffi, lib


class ThermoeError(RuntimeError):
    """A call into libthermoe failed. ``str(e)`` is the library's message; ``code`` is the
    tmoe_code (``code_name`` its name: ``"EINVAL"``, ``"EIO"``, ``"ENODEV"``, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = ffi.string(lib.tmoe_code_name(code)).decode()


class ThermoeValueError(ThermoeError, ValueError):
    """TMOE_EINVAL or TMOE_EFORMAT: a bad argument, configuration or file contents."""


def new_error() -> Any:
    return ffi.new("tmoe_error *")


def check(rc: int, err: Any) -> None:
    """Raise the library's message when rc is not TMOE_OK."""
    if rc == lib.TMOE_OK:
        return
    msg = ffi.string(err.msg).decode(errors="replace") if err.code else ""
    if not msg:
        msg = f"libthermoe returned {ffi.string(lib.tmoe_code_name(rc)).decode()}"
    cls = ThermoeValueError if rc in (lib.TMOE_EINVAL, lib.TMOE_EFORMAT) else ThermoeError
    raise cls(rc, msg)


def enum_value(ctype: str, value: Any, field: str = "") -> int:
    """An enum value from an int or a name: ``"warmup_cosine"`` or
    ``"TMOE_LR_WARMUP_COSINE"`` for tmoe_lr_schedule. The names come from the headers, so a
    new enumerator needs no change here."""
    elements: Dict[str, int] = ffi.typeof(ctype).relements
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) not in elements.values():
            raise ValueError(f"{field or ctype}: {value} is not a {ctype}")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(f"{field or ctype}: expected a name or an int, got {type(value).__name__}")
    want = value.strip().upper().replace("-", "_")
    for name, v in elements.items():
        if name == want or name.endswith("_" + want):
            return v
    names = sorted(_short_names(ctype))
    raise ValueError(f"{field or ctype}: unknown value {value!r}; expected one of {names}")


def _short_names(ctype: str) -> list:
    elements = ffi.typeof(ctype).relements
    prefix = _common_prefix(list(elements))
    return [n[len(prefix) :].lower() for n in elements if not n.endswith("_COUNT")]


def _common_prefix(names: list) -> str:
    if len(names) < 2:
        return names[0].rsplit("_", 1)[0] + "_" if names else ""
    p = names[0]
    for n in names[1:]:
        while not n.startswith(p):
            p = p[:-1]
    return p[: p.rfind("_") + 1]


def nan_if_none(x: Optional[float]) -> float:
    return math.nan if x is None else float(x)


def cstr(b: Any) -> str:
    """A C string (char * or char[]) as str; NULL -> ''."""
    if b == ffi.NULL:
        return ""
    return ffi.string(b).decode(errors="replace")


def as_array(x: Any, dtype: Any, ndim: int, name: str) -> np.ndarray:
    """x (numpy array, torch tensor on any device, or nested lists) as a C-contiguous numpy
    array of dtype with ndim dimensions. A CPU torch tensor is read through DLPack without a
    copy when it already has the dtype; a CUDA tensor is copied to the host."""
    if type(x).__module__.startswith("torch"):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        try:
            a = np.from_dlpack(t)
        except (TypeError, RuntimeError, BufferError):
            # a dtype numpy lacks (bfloat16, ...): widen in torch first
            a = (t.float() if t.is_floating_point() else t.long()).numpy()
    else:
        a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=dtype)


def ptr(a: Optional[np.ndarray], ctype: str) -> Any:
    """A C pointer into a contiguous numpy array (NULL for None); a keeps the memory."""
    if a is None:
        return ffi.NULL
    return ffi.cast(ctype, ffi.from_buffer(a))


def to_python(value: Any) -> Any:
    """A cdata struct (or array, or enum) as plain Python: structs become dicts keyed by
    field name, char arrays str, other arrays lists, enums their enumerator's short name
    (``"counter"`` for TMOE_ENERGY_COUNTER), pointers are left out. Field lists come from the
    headers, so a new field shows up here by itself."""
    t = ffi.typeof(value)
    if t.kind == "struct":
        out = {}
        for name, f in t.fields:
            if f.type.kind == "pointer" or f.type.kind == "function":
                continue
            out[name] = to_python(getattr(value, name))
        return out
    if t.kind == "array":
        if t.item.cname == "char":
            return ffi.string(value).decode(errors="replace")
        return [to_python(v) for v in value]
    return value


def struct_to_dict(value: Any) -> Dict[str, Any]:
    """Like to_python for a struct, with enum fields given by their short names."""
    t = ffi.typeof(value)
    out = {}
    for name, f in t.fields:
        ft = f.type
        if ft.kind in ("pointer", "function"):
            continue
        v = getattr(value, name)
        if ft.kind == "enum":
            out[name] = enum_name(ft.cname, v)
        elif ft.kind == "struct":
            out[name] = struct_to_dict(v)
        elif ft.kind == "array":
            out[name] = to_python(v)
        else:
            out[name] = v
    return out


def enum_name(ctype: str, v: int) -> str:
    """Short lower-case name of an enumerator (``"counter"``), or the int as str."""
    elements = ffi.typeof(ctype).elements
    if v not in elements:
        return str(v)
    prefix = _common_prefix(list(ffi.typeof(ctype).relements))
    return elements[v][len(prefix) :].lower()


def set_field(cfg: Any, ctype: str, name: str, value: Any, keep: list, who: str) -> None:
    """Set field ``name`` of the config struct ``cfg`` (a ``ctype``) from a Python value, by
    the field's C type: enums take their names, ``char *`` a str or path, pointers to int /
    float / double a sequence (copied into an array kept alive in ``keep``), arrays a list,
    numbers a number. An unknown field is a TypeError naming ``who`` and the fields."""
    fields = dict(ffi.typeof(ctype).fields)
    if name not in fields:
        raise TypeError(f"{who}: unknown keyword {name!r}; {ctype} has {sorted(fields)}")
    ft = fields[name].type
    if ft.kind == "enum":
        setattr(cfg, name, enum_value(ft.cname, value, name))
    elif ft.kind == "pointer" and value is None:
        setattr(cfg, name, ffi.NULL)
    elif ft.kind == "pointer" and ft.item.cname == "char":
        s = ffi.new("char[]", os.fsencode(value))
        keep.append(s)
        setattr(cfg, name, s)
    elif ft.kind == "pointer":
        dt = {"int": np.int32, "double": np.float64, "float": np.float32}.get(ft.item.cname)
        if dt is None:
            raise TypeError(f"{who}: field {name} ({ft.cname}) cannot be set from Python")
        a = np.ascontiguousarray(value, dtype=dt)
        keep.append(a)
        setattr(cfg, name, ptr(a, ft.cname))
    elif ft.kind == "array":
        setattr(cfg, name, list(value))
    elif ft.kind == "primitive" and ft.cname in ("float", "double"):
        setattr(cfg, name, float(value))
    elif ft.kind == "primitive":
        setattr(cfg, name, int(value))
    else:
        raise TypeError(f"{who}: field {name} ({ft.cname}) cannot be set from Python")
