"""A1111's prompt syntax: emphasis pieces, BREAK, the composable weight, and what is refused.

Expected values are worked out by hand from A1111 1.10's rules (modules/prompt_parser.py): "(x)" multiplies by 1.1,
"[x]" by 1/1.1, "(x:w)" by w, nesting multiplies, unclosed brackets reach the end, equal neighbours are joined.
LoRA tags as A1111 1.10's extra_networks.parse_prompt and extensions-builtin/Lora/extra_networks_lora.py read them.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api_samples import seed_payload
from img2img.api.errors import problems
from img2img.api.payload import Img2ImgPayload
from img2img.api.prompts import (BREAK, LoraTag, composable_weight, lora_tags, parse_emphasis, positive_text,
                                 prompt_edits, refusals)

UP, DOWN = 1.1, 1 / 1.1


@pytest.mark.parametrize("prompt, pieces", [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", UP), (" word", 1.0)]),
    ("a [quiet] word", [("a ", 1.0), ("quiet", DOWN), (" word", 1.0)]),
    ("(astronaut:1.3) riding", [("astronaut", 1.3), (" riding", 1.0)]),
    ("((nested))", [("nested", UP * UP)]),
    ("((house:1.3))", [("house", 1.3 * UP)]),
    ("(unbalanced", [("unbalanced", UP)]),
    ("[unbalanced", [("unbalanced", DOWN)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", UP)]),  # equal neighbours are one piece, tokenized together
    ("(x:1.0)", [("x", 1.0)]),
    ("", [("", 1.0)]),
])
def test_emphasis_as_a1111_weighs_it(prompt, pieces):
    assert parse_emphasis(prompt) == pieces


def test_weights_multiply_in_a1111s_order_to_the_last_bit():
    # the house gets 1.3 from its own bracket, then 1.1 twice from the outer ones: (1.3 * 1.1) * 1.1
    pieces = parse_emphasis("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    assert pieces == [("a ", 1.0), ("house", 1.3 * 1.1 * 1.1), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
                      ("hill", 0.5 * 1.1), (", sun, ", 1.1), ("sky", 1.1 * 1.1 * 1.1 * 1.1), (".", 1.1)]


def test_escaped_brackets_and_backslashes_are_text():
    assert parse_emphasis(r"\(literal\]") == [("(literal]", 1.0)]
    assert parse_emphasis(r"a \\ b") == [("a \\ b", 1.0)]
    assert parse_emphasis(r"a\b") == [("ab", 1.0)]  # a backslash before anything else is dropped
    assert parse_emphasis(r"(\(x\))") == [("(x)", UP)]


def test_closing_brackets_with_nothing_open_are_text():
    assert parse_emphasis("a) b] c:1.2)") == [("a) b] c:1.2)", 1.0)]


def test_break_splits_into_chunks_outside_brackets_only():
    assert parse_emphasis("a cat BREAK a dog") == [("a cat", 1.0), BREAK, ("a dog", 1.0)]
    assert parse_emphasis("BREAK a") == [("", 1.0), BREAK, ("a", 1.0)]
    assert parse_emphasis("BREAKING news") == [("BREAKING news", 1.0)]
    # inside brackets A1111's break marker (weight -1) is multiplied: it becomes the word BREAK, weighted -1.1
    assert parse_emphasis("(a BREAK b)") == [("a", UP), ("BREAK", -1.0 * UP), ("b", UP)]


def test_a_trailing_number_is_the_composable_weight_of_the_positive_prompt():
    assert composable_weight("a cat:1.2") == ("a cat", 1.2)
    assert composable_weight("a cat : .5  ") == ("a cat", 0.5)
    assert composable_weight("a (cat:1.2)") == ("a (cat:1.2)", 1.0)
    assert composable_weight("a cat") == ("a cat", 1.0)
    assert composable_weight("a\ncat:1.2") == ("a\ncat:1.2", 1.0)  # A1111's pattern stops at a line break


def test_prompt_editing_and_alternation_are_found():
    assert prompt_edits("a [cat:dog:0.5] and [bird:3], [x|y|z]") == [
        ("prompt editing", "[cat:dog:0.5]"), ("prompt editing", "[bird:3]"), ("alternation", "[x|y|z]")]
    assert prompt_edits("[a: 10]") == [("prompt editing", "[a: 10]")]
    # not edits: emphasis, escaped brackets, a weight in round brackets, a number not at the end
    assert prompt_edits(r"[quiet] \[a:0.5\] (a:0.5) [a:0.5 b] [a|b\]") == []


def test_refusals_name_the_construct():
    assert refusals("[cat:dog:0.5]", positive=False) == [
        "prompt editing '[cat:dog:0.5]' is not supported (A1111 changes the prompt from step to step); escape the "
        "brackets (\\[ \\]) to mean them literally"]
    assert "AND" in refusals("a cat AND a dog", positive=True)[0]
    assert refusals("a cat AND a dog", positive=False) == []  # A1111 splits only the positive prompt
    assert refusals("(cat:1.2.3)", positive=True) == [
        "the emphasis weight in ':1.2.3)' is not a number (A1111 fails the job on it)"]
    assert refusals("a (cat:1.3), [dog], \\[x|y\\] BREAK z:1.2", positive=True) == []


def _problems(**changes) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        Img2ImgPayload.model_validate(seed_payload(**changes))
    return {p.path: p.reason for p in problems(info.value, "input.payload")}


def test_the_payload_refuses_what_a1111_would_draw_otherwise():
    found = _problems(prompt="a [cat:dog:0.5]", negative_prompt="[ugly|blurry]")
    assert "prompt editing '[cat:dog:0.5]'" in found["input.payload.prompt"]
    assert "alternation '[ugly|blurry]'" in found["input.payload.negative_prompt"]
    assert "AND" in _problems(prompt="a cat AND a dog")["input.payload.prompt"]
    assert "below 1" in _problems(cfg_scale=0.5)["input.payload.cfg_scale"]
    assert "weight 0.1" in _problems(prompt="a cat:0.1", cfg_scale=7)["input.payload.cfg_scale"]
    ok = Img2ImgPayload.model_validate(seed_payload(prompt="(astronaut:1.3) BREAK [horse], \\[x:1\\]", cfg_scale=1))
    assert ok.prompt.startswith("(astronaut")


# --- LoRA tags ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, tags", [
    ("<lora:pixel:0.8>", [LoraTag("pixel", 0.8, 0.8)]),  # one weight: text encoders and UNet alike
    ("<lora:pixel>", [LoraTag("pixel", 1.0, 1.0)]),  # no weight: 1
    ("<lora:pixel:0.8:0.3>", [LoraTag("pixel", 0.8, 0.3)]),  # TE, then UNet
    ("<lora:pixel:te=0.2:unet=0.7>", [LoraTag("pixel", 0.2, 0.7)]),
    ("<lora:pixel:unet=0.5>", [LoraTag("pixel", 1.0, 0.5)]),
    ("<lora:pixel:unet=0.5:0.8>", [LoraTag("pixel", 0.8, 0.5)]),  # named ones leave the positional order alone
    ("<lora:pixel:0.8:te=0.1>", [LoraTag("pixel", 0.1, 0.1)]),  # te= wins over TE, and UNet follows TE
    ("<lora:my style v2.safetensors:1.5>", [LoraTag("my style v2.safetensors", 1.5, 1.5)]),
    ("<lora:pixel:0.5:0.5:foo=1>", [LoraTag("pixel", 0.5, 0.5)]),  # unknown named arguments: ignored, as A1111
    ("<LORA:pixel:1> <hypernet:h:1> <embedding:e>", []),  # other kinds (and A1111's kinds are case-sensitive)
    ("a <lyco:a:0.1> <lora:b:0.2> <lyco:c:0.3>", [LoraTag("a", 0.1, 0.1), LoraTag("c", 0.3, 0.3),
                                                LoraTag("b", 0.2, 0.2)]),  # grouped by the kind written
])
def test_lora_tags_as_a1111_reads_them(prompt, tags):
    assert lora_tags(prompt) == tags


def test_tags_leave_the_prompt_before_its_weight_is_read():
    assert positive_text("a cat <lora:pixel:0.8>, <hypernet:h> in space:1.2") == ("a cat ,  in space", 1.2)
    assert positive_text("a cat:1.2 <lora:pixel:1>") == ("a cat", 1.2)


@pytest.mark.parametrize("prompt, reason", [
    ("<lora:pixel:strong>", "<lora:pixel:strong>: the weight 'strong' is not a number"),
    ("<lora:pixel:te=x>", "<lora:pixel:te=x>: the weight 'x' is not a number"),
    ("<lora:pixel:inf>", "<lora:pixel:inf>: the weight 'inf' is not a finite number"),
    ("<lora:unet=1>", "<lora:unet=1>: a LoRA tag needs the LoRA's name first"),
    ("<lora:pixel:1:1:8>", "<lora:pixel:1:1:8>: dyn (the rank of a DyLoRA) is not supported"),
    ("<lora:pixel:dyn=8>", "<lora:pixel:dyn=8>: dyn (the rank of a DyLoRA) is not supported"),
    ("<hypernet:anime:1>", "hypernetworks (<hypernet:anime:1>) are not supported"),
])
def test_a_tag_a1111_fails_on_or_the_runner_cannot_apply_is_refused_in_the_prompt(prompt, reason):
    assert reason in _problems(prompt=f"a cat {prompt}")["input.payload.prompt"]


def test_the_payload_lists_the_prompts_loras_and_only_the_prompts():
    payload = Img2ImgPayload.model_validate(seed_payload(prompt="a cat <lora:pixel:0.8> (sharp:1.2):1.1",
                                                         negative_prompt="<lora:blur:1>"))
    assert payload.loras == [LoraTag("pixel", 0.8, 0.8)]  # A1111 does not parse the negative prompt: text there
    assert payload.prompt == "a cat <lora:pixel:0.8> (sharp:1.2):1.1"  # as sent: info and infotexts show it so
    off = Img2ImgPayload.model_validate(seed_payload(prompt="a cat <lora:pixel:x>", disable_extra_networks=True))
    assert off.loras == []  # disabled: A1111 strips the tags and applies nothing (a bad one is not read either)
