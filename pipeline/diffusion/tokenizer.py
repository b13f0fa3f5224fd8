"""A CLIP tokenizer made offline: byte-pair encoding learnt from the experiment's own captions.

Stable Diffusion's text encoder reads CLIP's BPE tokens (Radford et al. 2021, after Sennrich et
al. 2016): a caption is lower-cased, split into words, each word's UTF-8 bytes are written as 256
printable characters, the last one marked with ``</w>``, and merges learnt from a corpus join
adjacent symbols into tokens, most frequent pair first. CLIP's own merge table (49,152 merges)
cannot be downloaded here, so :func:`train_clip_tokenizer` learns one from the captions with the
``tokenizers`` library and writes it in CLIP's format (``vocab.json``: the 256 byte characters,
the same with ``</w>``, one token per merge, then ``<|startoftext|>`` and ``<|endoftext|>``;
``merges.txt``), which ``transformers.CLIPTokenizer`` (and so ``StableDiffusionPipeline``) loads
like the real one. Every word of every caption is then one or a few tokens, and any other text
still tokenizes, byte by byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from pipeline.artifacts import atomic_path

END_OF_WORD = "</w>"
START, END = "<|startoftext|>", "<|endoftext|>"
# CLIP's word pattern: contractions, runs of letters, single digits, runs of other symbols.
WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"""
MAX_LENGTH = 77  # tokens per prompt, start and end included, as in CLIP and Stable Diffusion


def learn_merges(captions: list[str], merges: int) -> list[tuple[str, str]]:
    """Up to ``merges`` BPE merges learnt from ``captions`` (fewer when the captions run out of
    pairs), in the order they were learnt, over CLIP's byte characters and word ends."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    base = len(alphabet) * 2  # each byte character alone and at a word's end
    bpe.train_from_iterator(captions, trainers.BpeTrainer(
        vocab_size=base + merges, initial_alphabet=alphabet, end_of_word_suffix=END_OF_WORD,
        show_progress=False))
    return [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]


def clip_vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary layout for ``merges``: byte characters, the same with ``</w>``, each
    merge's token, then the start and end tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [c + END_OF_WORD for c in alphabet] + ["".join(pair) for pair in merges] + [START, END]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}


def train_clip_tokenizer(captions: list[str], directory: str | Path, merges: int = 2000) -> None:
    """Learn up to ``merges`` merges from ``captions`` and write ``vocab.json``, ``merges.txt``
    and ``tokenizer_config.json`` into ``directory`` (atomically), a ``CLIPTokenizer`` directory."""
    learnt = learn_merges(captions, merges)
    with atomic_path(directory, directory=True) as tmp:
        (tmp / "vocab.json").write_text(json.dumps(clip_vocabulary(learnt), ensure_ascii=False))
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in learnt))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "bos_token": START,
            "eos_token": END, "unk_token": END, "pad_token": END, "do_lower_case": True}))
