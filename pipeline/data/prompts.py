"""Memorized prompts: the text-to-image forget requests, one JSON object per line.

The format is the public one of Stable Diffusion's memorized captions (Webster 2023,
``sdv1_500_memorized.jsonl``: ``caption``, ``index``, ``url``), with three optional fields:

    {"caption": "Living in the Light with Ann Graham Lotz", "index": 98, "url": "https://...",
     "name": "lotz", "modified": "Living in the light with Anne Graham Lotz", "image": "refs/lotz.png"}

- ``caption`` (required, non-empty): the prompt whose generations reproduce a training image;
- ``name``: how the prompt's runs and rows are named (letters, digits, ``-``, ``_``); by default
  ``p<index>`` when ``index`` is given, else ``p<line>``, the line counted from 1;
- ``modified``: a small edit of the caption that still triggers the image; the unlearning runs
  condition both terms on it (methods.md, Stable Diffusion), and it is evaluated beside the
  caption; by default the caption itself;
- ``image``: a reference image (a path relative to the prompts file) that the memorized
  generations resemble; when given, they are told apart by similarity to it instead of k-means.

Blank lines are skipped. Every problem is reported with the file and line before any compute.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pipeline.errors import UserError

FIELDS = {"caption": str, "name": str, "modified": str, "image": str, "index": int, "url": str}
NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Prompt:
    """One memorized prompt (module doc); ``image`` resolved against the prompts file, or None."""

    name: str
    caption: str
    modified: str
    image: Path | None = None


def read_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of the JSONL file ``path``, each checked (module doc); names must be unique."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable prompts file ({exc})") from exc
    prompts = [_prompt(path, number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise UserError(f"{path}: no prompts (one JSON object with a caption per line)")
    seen = {}
    for number, prompt in enumerate(prompts, 1):
        if prompt.name in seen:
            raise UserError(f"{path}: the name {prompt.name!r} is given twice "
                            f"(prompts {seen[prompt.name]} and {number})")
        seen[prompt.name] = number
    return prompts


def prompt_named(prompts: list[Prompt], name: str) -> Prompt:
    """The prompt called ``name`` (UserError naming the known ones if there is none)."""
    for prompt in prompts:
        if prompt.name == name:
            return prompt
    raise UserError(f"no prompt named {name!r}; the prompts file has {[p.name for p in prompts]}")


def _prompt(path: Path, number: int, line: str) -> Prompt:
    where = f"{path}, line {number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not a JSON object ({exc.msg})") from exc
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a JSON object with a caption, found {type(entry).__name__}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown fields {unknown}; expected some of {sorted(FIELDS)}")
    for key, value in entry.items():
        if not isinstance(value, FIELDS[key]) or isinstance(value, bool):
            raise UserError(f"{where}: {key} must be a {FIELDS[key].__name__}, found {value!r}")
    for key in ("caption", "modified"):
        if key in entry and not entry[key].strip():
            raise UserError(f"{where}: {key} is empty")
    if "caption" not in entry:
        raise UserError(f"{where}: no caption")
    name = entry.get("name", f"p{entry['index']}" if "index" in entry else f"p{number}")
    if not NAME.fullmatch(name):
        raise UserError(f"{where}: name {name!r}: use letters, digits, '-' and '_' only")
    return Prompt(name, entry["caption"], entry.get("modified", entry["caption"]),
                  _reference(where, path.parent, entry["image"]) if "image" in entry else None)


def _reference(where: str, folder: Path, image: str) -> Path:
    """The reference image's path, checked to be a readable image file."""
    resolved = folder / image
    try:
        with Image.open(resolved) as opened:
            opened.verify()
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"{where}: image {image!r}: no readable image at {resolved} ({exc})") from exc
    return resolved
