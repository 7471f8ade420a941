"""A numpy fp32 BERT encoder with sentence-transformers mean pooling, and its WordPiece tokenizer.

Written for sentence-transformers/all-MiniLM-L6-v2 (BertModel, absolute positions, erf GELU,
post-LayerNorm); any BERT checkpoint without the `bert.` prefix and with the same config keys works.
No torch: the tokenizer follows BertTokenizer (basic tokenizer + greedy longest-match WordPiece)
and the forward pass follows transformers' BertModel in eval mode.
"""

import json
import math
import os
import unicodedata

import numpy as np

# ---------------------------------------------------------------------------------------------
# Tokenizer


def _is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def _is_punctuation(c):
    """BERT's rule: every non-alphanumeric ASCII symbol, plus Unicode category P*."""
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPieceTokenizer:
    """Uncased BERT tokenizer: clean, split CJK, lowercase + strip accents, split punctuation,
    then greedy longest-match WordPiece with `##` continuations."""

    def __init__(self, vocab_path, max_chars_per_word=100):
        with open(vocab_path, encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        self.max_chars_per_word = max_chars_per_word
        self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk_id, self.pad_id = self.vocab["[UNK]"], self.vocab["[PAD]"]

    def _basic_tokens(self, text):
        """Whitespace/punctuation tokens of the cleaned, lowercased, accent-stripped text."""
        chars = []
        for c in text:
            cp = ord(c)
            if cp == 0 or cp == 0xFFFD or _is_control(c):
                continue
            if _is_cjk(cp):
                chars.append(f" {c} ")
            else:
                chars.append(" " if _is_whitespace(c) else c)
        tokens = []
        for word in "".join(chars).split():
            word = unicodedata.normalize("NFD", word.lower())
            word = "".join(c for c in word if unicodedata.category(c) != "Mn")
            current = ""
            for c in word:
                if _is_punctuation(c):
                    if current:
                        tokens.append(current)
                    tokens.append(c)
                    current = ""
                else:
                    current += c
            if current:
                tokens.append(current)
        return tokens

    def _wordpiece(self, word):
        """Greedy longest-match ids of one basic token ([UNK] if any piece is missing)."""
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return ids

    def encode(self, text, max_length=None):
        """[CLS] wordpieces [SEP], the wordpieces truncated so the total is <= max_length."""
        ids = [i for word in self._basic_tokens(text) for i in self._wordpiece(word)]
        if max_length is not None:
            ids = ids[:max_length - 2]
        return [self.cls_id] + ids + [self.sep_id]


# ---------------------------------------------------------------------------------------------
# Model


def _erf(x):
    """Vectorised erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7, below fp32 resolution of
    the GELU output)."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                                                       + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x):
    """The exact (erf) GELU of BERT's `hidden_act: gelu`."""
    return (0.5 * x * (1.0 + _erf(x * np.float32(1.0 / math.sqrt(2.0))))).astype(np.float32)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear_modules(num_layers):
    """The names of the encoder's Linear modules, in forward order (6 per layer)."""
    names = []
    for i in range(num_layers):
        p = f"encoder.layer.{i}."
        names += [p + "attention.self.query", p + "attention.self.key", p + "attention.self.value",
                  p + "attention.output.dense", p + "intermediate.dense", p + "output.dense"]
    return names


class BertEncoder:
    """BertModel forward pass (eval mode) with mean pooling over non-padding tokens and L2
    normalisation, as sentence-transformers' all-MiniLM-L6-v2 pipeline does."""

    def __init__(self, model_dir, weights):
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        if self.config.get("hidden_act") != "gelu":
            raise ValueError(f"unsupported hidden_act {self.config.get('hidden_act')!r}")
        self.weights = {k: v.astype(np.float32) for k, v in weights.items()
                        if np.issubdtype(v.dtype, np.floating)}
        self.num_layers = self.config["num_hidden_layers"]
        self.num_heads = self.config["num_attention_heads"]
        self.eps = self.config["layer_norm_eps"]

    def with_weights(self, replaced):
        """A copy of this encoder whose `<module>.weight` tensors are replaced (module -> array)."""
        other = object.__new__(BertEncoder)
        other.__dict__.update(self.__dict__)
        other.weights = dict(self.weights)
        for module, w in replaced.items():
            other.weights[module + ".weight"] = np.asarray(w, dtype=np.float32)
        return other

    def _linear(self, module, x):
        return x @ self.weights[module + ".weight"].T + self.weights[module + ".bias"]

    def _ln(self, prefix, x):
        return layer_norm(x, self.weights[prefix + ".weight"], self.weights[prefix + ".bias"],
                          self.eps)

    def _embed(self, ids):
        w = self.weights
        positions = np.arange(ids.shape[1])
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][positions][None]
             + w["embeddings.token_type_embeddings.weight"][0][None, None])
        return self._ln("embeddings.LayerNorm", x)

    def _attention(self, p, x, mask, observe):
        b, length, hidden = x.shape
        heads, dim = self.num_heads, hidden // self.num_heads
        observe((p + "attention.self.query", p + "attention.self.key", p + "attention.self.value"),
                x)

        def split(t):
            return t.reshape(b, length, heads, dim).transpose(0, 2, 1, 3)

        q = split(self._linear(p + "attention.self.query", x))
        k = split(self._linear(p + "attention.self.key", x))
        v = split(self._linear(p + "attention.self.value", x))
        scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / math.sqrt(dim))
        scores = np.where(mask[:, None, None, :], scores, np.float32(np.finfo(np.float32).min))
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, length, hidden)
        observe((p + "attention.output.dense",), context)
        out = self._linear(p + "attention.output.dense", context)
        return self._ln(p + "attention.output.LayerNorm", out + x)

    def _ffn(self, p, x, observe):
        observe((p + "intermediate.dense",), x)
        h = gelu(self._linear(p + "intermediate.dense", x))
        observe((p + "output.dense",), h)
        return self._ln(p + "output.LayerNorm", self._linear(p + "output.dense", h) + x)

    def embed(self, batch_ids, observe=None):
        """Normalised mean-pooled embeddings [B, hidden] of token id lists (one per sentence).

        `observe(modules, x)`, if given, is called with the input [B, L, K] of each Linear (modules
        sharing an input come as one tuple) and sees only the rows of non-padding tokens."""
        length = max(len(s) for s in batch_ids)
        ids = np.zeros((len(batch_ids), length), dtype=np.int64)
        mask = np.zeros((len(batch_ids), length), dtype=bool)
        for i, s in enumerate(batch_ids):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = True

        def observe_real(modules, x):
            if observe is not None:
                observe(modules, x[mask])

        x = self._embed(ids)
        for i in range(self.num_layers):
            p = f"encoder.layer.{i}."
            x = self._attention(p, x, mask, observe_real)
            x = self._ffn(p, x, observe_real)
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def embed_all(self, token_ids, observe=None, max_batch_tokens=8192):
        """Embeddings [len(token_ids), hidden] in input order, batched by similar length."""
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        out = np.zeros((len(token_ids), self.config["hidden_size"]), dtype=np.float32)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(token_ids[order[end]]) \
                    <= max_batch_tokens:
                end += 1
            idx = order[start:end]
            out[idx] = self.embed([token_ids[i] for i in idx], observe)
            start = end
        return out
