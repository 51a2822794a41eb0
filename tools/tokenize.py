#!/usr/bin/env python3
"""Turn text into a thermoe token file with the model's own tokenizer.

The token file (DESIGN.md "Real models"): a header of 256 little-endian int32 -- [0] magic
20261206, [1] version 1, [2] number of tokens n, [3] vocabulary size, [4] bytes per id (4),
[5] UTF-8 bytes of the text (0 = unknown) -- then n little-endian uint32 ids. thermoe reads
ids and never tokenizes text itself.

usage:
  tools/tokenize.py --model DIR  --out FILE [TEXT ...]     (DIR/tokenizer.json, else
                                                           transformers' AutoTokenizer on DIR)
  tools/tokenize.py --tokenizer tokenizer.json --vocab-size N --out FILE [TEXT ...]
TEXT files are concatenated as they are; none or '-' reads standard input. The vocabulary
size in the header is the model's (config.json vocab_size) unless --vocab-size says otherwise.
"""
import os
import sys

# This file is called tokenize.py like the standard library's module that transformers and
# torch import; drop its folder from the path so that import finds the standard one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402

MAGIC, VERSION, HEADER_INTS = 20261206, 1, 256


def write_tokens(path, ids, vocab_size, text_bytes):
    """Write ids as a token file (whole or not at all: temporary + rename)."""
    for i, t in enumerate(ids):
        if not 0 <= t < vocab_size:
            raise ValueError(f"id {t} at {i} is outside the vocabulary of {vocab_size}")
    if len(ids) > 2**31 - 1 or text_bytes > 2**31 - 1:
        raise ValueError("too many tokens or text bytes for the int32 header")
    header = [MAGIC, VERSION, len(ids), vocab_size, 4, text_bytes] + [0] * (HEADER_INTS - 6)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack("<%dI" % len(ids), *ids))
    os.replace(tmp, path)


def read_tokens(path):
    """The ids of a token file (header checked)."""
    with open(path, "rb") as f:
        data = f.read()
    h = struct.unpack_from("<256i", data)
    if h[0] != MAGIC or h[1] != VERSION or h[4] != 4 or len(data) != 4 * HEADER_INTS + 4 * h[2]:
        raise ValueError(f"{path}: not a version-1 token file")
    return list(struct.unpack_from("<%dI" % h[2], data, 4 * HEADER_INTS))


def load_encoder(a):
    """A function text -> ids, and the vocabulary size for the header."""
    tok_path = a.tokenizer or (os.path.join(a.model, "tokenizer.json") if a.model else None)
    vocab = a.vocab_size
    if a.model and vocab is None and os.path.exists(os.path.join(a.model, "config.json")):
        with open(os.path.join(a.model, "config.json")) as f:
            vocab = json.load(f).get("vocab_size")
    if tok_path and os.path.exists(tok_path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tok_path)
        enc = lambda s: tok.encode(s, add_special_tokens=a.add_special_tokens).ids  # noqa: E731
        return enc, vocab if vocab is not None else tok.get_vocab_size()
    if not a.model:
        sys.exit(f"tokenize.py: {tok_path} does not exist")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.model)
    enc = lambda s: tok(s, add_special_tokens=a.add_special_tokens)["input_ids"]  # noqa: E731
    return enc, vocab if vocab is not None else len(tok)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Text -> thermoe token file, with the model's "
                                 "own tokenizer (tokenizers / transformers).")
    ap.add_argument("--model", help="model directory (tokenizer.json, config.json)")
    ap.add_argument("--tokenizer", help="a tokenizer.json (instead of --model)")
    ap.add_argument("--vocab-size", type=int, help="header vocabulary size (default: the "
                    "model's vocab_size, else the tokenizer's)")
    ap.add_argument("--add-special-tokens", action="store_true",
                    help="let the tokenizer add BOS/EOS (default: the text's tokens only)")
    ap.add_argument("--out", required=True, help="token file to write")
    ap.add_argument("text", nargs="*", help="UTF-8 text files (default: standard input)")
    a = ap.parse_args(argv)
    if not a.model and not a.tokenizer:
        ap.error("give --model DIR or --tokenizer FILE")
    text = ""
    for p in a.text or ["-"]:
        if p == "-":
            text += sys.stdin.read()
        else:
            with open(p, encoding="utf-8") as f:
                text += f.read()
    enc, vocab = load_encoder(a)
    ids = enc(text)
    write_tokens(a.out, ids, vocab, len(text.encode("utf-8")))
    print(f"{a.out}: {len(ids)} tokens, vocabulary {vocab}, {len(text.encode('utf-8'))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
