#!/usr/bin/env python3
"""Train the default model's tokenizer: a byte-level BPE (GPT-2 style: every byte is a
symbol, so any UTF-8 text encodes and decodes exactly) on the train split only.

The vocabulary is --vocab-size ids (default 4096): id 0 is <|endoftext|> (never added by
tools/tokenize.py, kept for users who want a document separator), then the 256 byte symbols,
then the merges. Pre-tokenization splits words the GPT-2 way without adding a prefix space,
so a text's tokens are the concatenation of its pieces' tokens. Deterministic for a given
text and tokenizers version.

usage: tools/train_tokenizer.py [--vocab-size 4096] [--out .corpus/tokenizer.json] TRAIN.txt
"""
import os
import sys

# tools/tokenize.py would shadow the standard library's tokenize while this folder is first
# on the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402

ROOT = os.path.dirname(HERE)
SPECIAL = "<|endoftext|>"


def train(texts, vocab_size):
    """A byte-level BPE Tokenizer trained on the given strings."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok




def main(argv=None):
    ap = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer (tokenizers) "
                                 "on a text file and save tokenizer.json.")
    ap.add_argument("--vocab-size", type=int, default=4096, help="vocabulary (default 4096)")
    ap.add_argument("--out", default=os.path.join(ROOT, ".corpus", "tokenizer.json"),
                    help="tokenizer.json to write (default .corpus/tokenizer.json)")
    ap.add_argument("train", help="training text (UTF-8), e.g. .corpus/train.txt")
    a = ap.parse_args(argv)
    if a.vocab_size < 257 + 1:
        ap.error("--vocab-size must leave room for the 256 bytes and the special token")
    with open(a.train, encoding="utf-8") as f:
        text = f.read()
    # One piece: the trainer then sees exactly the pre-tokenized words that encoding the
    # whole file gives.
    tok = train([text], a.vocab_size)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tok.save(a.out)
    # Round trip on the training text: byte-level BPE must give it back exactly.
    sample = text[:200000]
    ids = tok.encode(sample).ids
    if tok.decode(ids) != sample:
        raise SystemExit("train_tokenizer: decode(encode(text)) != text")
    print(f"{a.out}: vocabulary {tok.get_vocab_size()}, "
          f"{len(sample.encode('utf-8')) / len(ids):.2f} bytes/token on the first 200 kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
