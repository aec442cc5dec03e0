"""A1111's prompt syntax (v1.10), read as A1111 reads it: what the text encoders get, and what is refused (pure).

A1111 turns a prompt into conditioning in three passes (modules/prompt_parser.py):

1. the positive prompt only: split at ``AND`` (composable diffusion), and a trailing ``:number`` on each part is
   that part's weight, which multiplies the CFG scale (``a cat:1.2`` is the text ``a cat`` guided at 1.2 x CFG);
2. prompt editing ``[a:b:0.5]`` / ``[a:0.5]`` and alternation ``[a|b]`` change the text from step to step;
3. emphasis, per text: ``(x)`` x 1.1, ``[x]`` / 1.1, ``(x:1.3)`` x 1.3, nested brackets multiply, an unclosed bracket
   reaches to the end; ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are the characters themselves, and a backslash
   before anything else is dropped; ``BREAK`` (a word, in capitals) ends the current 75-token chunk.

Passes 1 and 3 are implemented here (``composable_weight``, ``parse_emphasis``); the runner tokenizes and encodes
the pieces (img2img_runner.conditioning). ``AND`` and pass 2 are refused by name (``refusals``): the picture would
need a conditioning per step or per sub-prompt, which the runner does not build.

Before all of that A1111 takes the extra-network tags out of the positive prompt (modules/extra_networks.py
``parse_prompt``): ``<lora:NAME:TE[:UNET[:DYN]]>`` (named forms ``te=``, ``unet=``, ``dyn=``; ``<lyco:…>`` is the same
network) are LoRAs (``lora_tags``), ``<hypernet:…>`` is refused, tags of any other kind are dropped (A1111 skips
networks it does not know). The negative prompt is not parsed: a tag there is text, as in A1111.

A1111's own oddities are kept, since they are what A1111 draws: ``BREAK`` inside brackets is not a break but the
word BREAK with a negative weight (A1111 marks a break with weight -1, and the brackets multiply it); ``:1.2)``
without an open ``(`` is plain text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

EMPHASIS_UP = 1.1  # "(x)"
EMPHASIS_DOWN = 1 / 1.1  # "[x]": A1111 multiplies by 1/1.1 (not a division: the last bits differ)
BREAK = ("BREAK", -1.0)  # how a BREAK travels among the pieces: A1111's marker, text "BREAK" with weight -1

Piece = tuple[str, float]

# Emphasis tokens, in the order A1111 tries them: an escaped bracket or backslash; any other backslash; an opening
# bracket; ":<number>)" closing a round bracket with a weight; a closing bracket; text up to the next special
# character; a lone ":".
_EMPHASIS_TOKEN = re.compile(r"""
    \\(?P<escaped>[()\[\]\\])
  | (?P<backslash>\\)
  | (?P<open>[(\[])
  | :(?P<weight>[+-]?[.\d]+)\)
  | (?P<close>[)\]])
  | (?P<text>[^\\()\[\]:]+|:)
""", re.X)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*", re.S)

# A1111's extra-network tags (modules/extra_networks.py ``re_extra_net``): "<lora:name:0.8>", "<hypernet:…>"
EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = ("lora", "lyco")  # A1111's Lora extension registers "lyco" as an alias of "lora"

# the AND that splits a positive prompt into composable sub-prompts
_AND = re.compile(r"\bAND\b")
# a sub-prompt's trailing ":<number>" (no DOTALL: a prompt with a line break inside never has one, as in A1111)
_COMPOSABLE_WEIGHT = re.compile(r"(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*")
# the end of a prompt edit "[a:b:0.5]": ":", optional whitespace, a number as A1111's grammar reads one, "]"
_EDIT_STEP = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


class PromptError(ValueError):
    """A prompt A1111 would not draw as written here; the message says why, for the field's error."""


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:…>`` tag: the LoRA's name as written and its weights on the text encoders and the UNet."""

    name: str
    te: float
    unet: float


def strip_extra_networks(prompt: str) -> str:
    """The prompt without its extra-network tags, as A1111's ``parse_prompt`` leaves it for the text encoders."""
    return EXTRA_NETWORK_TAG.sub("", prompt)


def positive_text(prompt: str) -> tuple[str, float]:
    """What A1111 encodes of a positive prompt, and its guidance weight: the tags taken out, then the composable
    weight split off (``"a cat:1.2 <lora:x:1>"`` -> ``("a cat", 1.2)``)."""
    return composable_weight(strip_extra_networks(prompt))


def lora_tags(prompt: str) -> list[LoraTag]:
    """The LoRA tags of a positive prompt, in the order A1111 loads them (grouped by the kind written, kinds in order
    of first appearance: ``<lyco:a> <lora:b> <lyco:c>`` loads a, c, b). Arguments as A1111's extra_networks_lora:
    positional NAME, TE (default 1), UNET (default TE), DYN; named ``te=``, ``unet=``, ``dyn=`` win over positional
    ones; other arguments are ignored. Raises PromptError for a tag A1111 would fail on, or that the runner cannot
    draw as A1111 does (``dyn``, DyLoRA's rank)."""
    by_kind: dict[str, list[str]] = {}
    for kind, args in EXTRA_NETWORK_TAG.findall(prompt):
        if kind in LORA_KINDS:
            by_kind.setdefault(kind, []).append(args)
    return [_lora_tag(kind, args) for kind, tags in by_kind.items() for args in tags]


def _lora_tag(kind: str, args: str) -> LoraTag:
    written = f"<{kind}:{args}>"
    positional, named = [], {}
    for item in args.split(":"):
        key, eq, value = item.partition("=")
        if eq and "=" not in value:  # A1111 splits at "=" at most twice: "a=b=c" is positional
            named[key] = value
        else:
            positional.append(item)
    if not positional or not positional[0].strip():
        raise PromptError(f"{written}: a LoRA tag needs the LoRA's name first")
    te = _weight(named.get("te", positional[1] if len(positional) > 1 else "1"), written)
    unet = _weight(named["unet"], written) if "unet" in named else (
        _weight(positional[2], written) if len(positional) > 2 else te)
    if "dyn" in named or len(positional) > 3:
        raise PromptError(f"{written}: dyn (the rank of a DyLoRA) is not supported; remove it")
    return LoraTag(name=positional[0], te=te, unet=unet)


def _weight(value: str, written: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        raise PromptError(f"{written}: the weight {value!r} is not a number (A1111 fails the job on it)") from None
    if not math.isfinite(weight):
        raise PromptError(f"{written}: the weight {value!r} is not a finite number")
    return weight


def extra_network_refusals(prompt: str) -> list[str]:
    """Why the runner cannot apply the extra networks of a positive prompt as A1111 would: bad LoRA tags,
    hypernetworks."""
    reasons = []
    try:
        lora_tags(prompt)
    except PromptError as exc:
        reasons.append(str(exc))
    hypernets = [f"<{kind}:{args}>" for kind, args in EXTRA_NETWORK_TAG.findall(prompt) if kind == "hypernet"]
    if hypernets:
        reasons.append(f"hypernetworks ({', '.join(hypernets[:3])}) are not supported; remove the tags or set "
                       "disable_extra_networks to true")
    return reasons


def composable_weight(prompt: str) -> tuple[str, float]:
    """The positive prompt's text and weight as A1111's composable-diffusion split leaves a prompt without AND:
    ``"a cat:1.2"`` -> ``("a cat", 1.2)``; without a trailing number the weight is 1 (the text loses trailing
    whitespace, which the tokenizer ignores anyway)."""
    match = _COMPOSABLE_WEIGHT.fullmatch(prompt)
    if match is None:
        return prompt, 1.0
    text, weight = match.groups()
    return text, float(weight) if weight is not None else 1.0


def parse_emphasis(text: str) -> list[Piece]:
    """(text, weight) pieces of one prompt text, as A1111's ``parse_prompt_attention``; ``BREAK`` pieces mark the
    chunk breaks. Adjacent pieces of equal weight are joined (so they are tokenized together, as in A1111).
    Raises PromptError for a ``(x:w)`` whose w is not a number (A1111 fails the job on it)."""
    pieces: list[list] = []  # [text, weight]: weights change as brackets close
    rounds: list[int] = []  # where each open "(" began, in pieces
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for token in _EMPHASIS_TOKEN.finditer(text):
        if token["escaped"] is not None:
            pieces.append([token["escaped"], 1.0])
        elif token["backslash"] is not None:
            pieces.append(["", 1.0])
        elif token["open"] is not None:
            (rounds if token["open"] == "(" else squares).append(len(pieces))
        elif token["weight"] is not None and rounds:
            scale(rounds.pop(), _number(token["weight"], token[0]))
        elif token["close"] == ")" and rounds:
            scale(rounds.pop(), EMPHASIS_UP)
        elif token["close"] == "]" and squares:
            scale(squares.pop(), EMPHASIS_DOWN)
        else:  # text, or a closing bracket with nothing open: plain text, where BREAK splits
            for i, part in enumerate(_BREAK_WORD.split(token[0])):
                if i:
                    pieces.append(list(BREAK))
                pieces.append([part, 1.0])
    for start in rounds:  # unclosed brackets reach to the end: rounds first, then squares, as A1111
        scale(start, EMPHASIS_UP)
    for start in squares:
        scale(start, EMPHASIS_DOWN)

    merged: list[Piece] = []
    for piece_text, weight in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + piece_text, weight)
        else:
            merged.append((piece_text, weight))
    return merged


def _number(value: str, token: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise PromptError(f"the emphasis weight in {token!r} is not a number (A1111 fails the job on it)") from None


def prompt_edits(text: str) -> list[tuple[str, str]]:
    """The bracket groups A1111 would read as prompt editing (``[a:b:0.5]``, ``[a:0.5]``) or alternation
    (``[a|b]``): (kind, group as written). Errs on the side of finding one: a group that A1111's grammar would
    reject as a whole is still listed."""
    found: list[tuple[str, str]] = []
    opened: list[int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # an escaped character is text
            continue
        if char == "[":
            opened.append(i)
        elif char == "]" and opened:
            start = opened.pop()
            inner = re.sub(r"\\.", "", text[start + 1:i], flags=re.S)
            if _EDIT_STEP.search(inner):
                found.append(("prompt editing", text[start:i + 1]))
            elif "|" in inner:
                found.append(("alternation", text[start:i + 1]))
        i += 1
    return found


def refusals(prompt: str, *, positive: bool) -> list[str]:
    """Why A1111 would draw ``prompt`` differently from what the runner draws: one reason per construct."""
    if positive and _AND.search(prompt):
        return ["AND (composable prompts, one conditioning per part) is not supported; write one prompt"]
    text = positive_text(prompt)[0] if positive else prompt
    reasons = [f"{kind} {group!r} is not supported (A1111 changes the prompt from step to step); escape the "
               "brackets (\\[ \\]) to mean them literally" for kind, group in prompt_edits(text)[:3]]
    try:
        parse_emphasis(text)
    except PromptError as exc:
        reasons.append(str(exc))
    return reasons
