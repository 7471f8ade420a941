"""Deterministic English sentences from the documentation every Debian machine carries.

Sources: /usr/share/common-licenses (base-files) and the READMEs, NEWS, copyright files and
.txt/.md/.rst documents under /usr/share/doc (changelogs are left out: mostly bullet fragments).
Paragraphs are split into sentences; a sentence is kept when it has 6-60 words, starts with a
capital letter, ends with . ! or ?, and is at least 85% letters and spaces. After de-duplication
the order is a keyed shuffle: sentences sorted by sha256(seed:sentence). Unlike a seeded shuffle of
the whole list, this order is stable when a package adds or removes documents (only sentences whose
keys fall among the selected ones change), so machines with slightly different package sets mostly
share sentences.
"""

import gzip
import hashlib
import os
import re

SOURCE_ROOTS = ("/usr/share/common-licenses", "/usr/share/doc")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _is_document(path):
    """True for the files read as prose: licenses, READMEs, NEWS, copyright, .txt/.md/.rst."""
    name = os.path.basename(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if "changelog" in name:
        return False
    return (path.startswith(SOURCE_ROOTS[0])
            or name.endswith((".txt", ".md", ".rst"))
            or name.startswith(("readme", "copyright", "news")))


def _document_paths():
    """Every prose document under the source roots, in a fixed (sorted) order; symlinks skipped."""
    for root in SOURCE_ROOTS:
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                path = os.path.join(directory, name)
                if not os.path.islink(path) and _is_document(path):
                    yield path


def _read_text(path):
    """The UTF-8 text of a (possibly gzipped) file, or None when it is not UTF-8 text."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def _is_sentence(s):
    """The sentence filter: 6-60 words, capitalised, terminated, mostly letters."""
    if not 6 <= len(s.split()) <= 60:
        return False
    if not s[0].isupper() or s[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c == " " for c in s)
    return letters >= 0.85 * len(s)


def sentences_of(text):
    """The sentences of a document: paragraphs joined into one line each, split after . ! ?"""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        for s in _SENTENCE_END.split(" ".join(paragraph.split())):
            if _is_sentence(s):
                yield s


def load_sentences(count, seed=0):
    """`count` distinct sentences in keyed-shuffle order (see the module docstring)."""
    unique = set()
    for path in _document_paths():
        text = _read_text(path)
        if text is not None:
            unique.update(sentences_of(text))
    if len(unique) < count:
        raise RuntimeError(f"only {len(unique)} sentences found under {SOURCE_ROOTS}, need {count}")

    def key(s):
        return hashlib.sha256(f"{seed}:{s}".encode()).hexdigest()

    return sorted(unique, key=key)[:count]


def fingerprint(sentences):
    """A short digest of a sentence list (printed in the results header; part of cache keys)."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode() + b"\n")
    return h.hexdigest()[:16]
