"""Prompts reach the UNet as A1111 1.10 conditions it, on the tiny models.

The tiny tokenizer spells a word letter by letter, its last letter in the end-of-word form ("ab" -> a, b</w>), so the
expected token ids below are written out by hand. Expected conditioning is computed from the tiny text encoders
directly, following A1111's rules (sd_hijack_clip.py): each 77-token chunk encoded on its own, token vectors times
their weights, the chunk's mean restored; SDXL: the penultimate layer of both encoders, pooled from the first chunk.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_samples import sd15_input

SD15, SDXL = "v1-5-pruned-emaonly", "sd_xl_base_1.0"
FAST = dict(steps=4, denoising_strength=0.5)


@pytest.fixture(scope="module")
def modules(catalog, model_cache):
    def of(name: str) -> dict:
        entry = catalog.resolve(checkpoint=name, vae=None, refiner=None, controlnets=[]).checkpoint
        return model_cache.checkpoint(entry).modules

    return of


def ids(tokenizer, *tokens: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [vocab[t] for t in tokens]


def chunk(tokenizer, *tokens: str, pad: str = "<|endoftext|>") -> list[int]:
    """start, the tokens, end, then padding to 77 (the end token for CLIP-L, '!' (id 0) for SDXL's CLIP-G)."""
    body = ids(tokenizer, "<|startoftext|>", *tokens, "<|endoftext|>")
    return body + ids(tokenizer, pad) * (77 - len(body))


def chunks_of(prompt: str, tokenizer) -> list:
    from img2img.api.prompts import parse_emphasis
    from img2img_runner.conditioning import TextEncoder, Vocabulary, chunk_pieces

    encoder = TextEncoder(tokenizer, None, layer=None)
    return chunk_pieces(parse_emphasis(prompt), encoder.tokenize, Vocabulary.of(tokenizer))


# --- tokens and chunks -------------------------------------------------------------------------------------


def test_pieces_are_tokenized_apart_weighted_and_broken_into_chunks(modules):
    tok = modules(SD15)["tokenizer"]
    first, second = chunks_of("ab (c:1.5) BREAK d", tok)
    assert list(first.tokens) == chunk(tok, "a", "b</w>", "c</w>")
    assert list(first.multipliers) == [1.0, 1.0, 1.0, 1.5] + [1.0] * 73
    assert list(second.tokens) == chunk(tok, "d</w>")
    # "(ab)(c)" is one piece "abc": tokenized as one word, as A1111 joins equal weights before tokenizing
    (joined,) = chunks_of("(ab)(c)", tok)
    assert list(joined.tokens) == chunk(tok, "a", "b", "c</w>")
    (escaped,) = chunks_of(r"\(c\)", tok)
    assert list(escaped.tokens) == chunk(tok, "(</w>", "c</w>", ")</w>") and set(escaped.multipliers) == {1.0}


def test_a_long_prompt_continues_in_75_token_chunks_moving_a_nearby_comma_tail(modules):
    tok = modules(SD15)["tokenizer"]
    # 60 a, a comma, 20 b: the chunk is full after 14 b; the comma is 15 tokens back (<= 20): the b move on
    near = chunks_of("a " * 60 + ", " + "b " * 20, tok)
    assert [list(c.tokens) for c in near] == [chunk(tok, *["a</w>"] * 60, ",</w>"), chunk(tok, *["b</w>"] * 20)]
    # 50 a, a comma, 30 b: the comma is 25 tokens back: the chunk is cut at 75 tokens
    far = chunks_of("a " * 50 + ", " + "b " * 30, tok)
    assert [list(c.tokens) for c in far] == [chunk(tok, *["a</w>"] * 50, ",</w>", *["b</w>"] * 24),
                                             chunk(tok, *["b</w>"] * 6)]
    (exactly,) = chunks_of("a " * 75, tok)  # 75 tokens fit one chunk
    assert list(exactly.tokens) == chunk(tok, *["a</w>"] * 75)


def test_sdxl_second_encoder_pads_with_its_pad_token_after_the_end(modules):
    tok2 = modules(SDXL)["tokenizer_2"]
    (only,) = chunks_of("ab", tok2)
    assert list(only.tokens) == chunk(tok2, "a", "b</w>", pad="!") and ids(tok2, "!") == [0]


# --- conditioning ------------------------------------------------------------------------------------------


def test_sd15_conditioning_is_weighted_with_its_mean_restored(modules):
    from img2img_runner.conditioning import encode, text_encoders

    m = modules(SD15)
    tok, te = m["tokenizer"], m["text_encoder"]
    got = encode("(ab:1.5) c", text_encoders(m, "sd15"), device="cpu")
    with torch.no_grad():
        z = te(torch.tensor([chunk(tok, "a", "b</w>", "c</w>")])).last_hidden_state
    weights = torch.tensor([1.0, 1.5, 1.5] + [1.0] * 74).reshape(1, 77, 1)
    expected = z * weights * (z.mean() / (z * weights).mean())
    assert got.pooled is None and torch.allclose(got.embeds, expected, atol=1e-6)
    assert not torch.allclose(got.embeds, z, atol=1e-3)  # the weight did something
    plain = encode("ab c", text_encoders(m, "sd15"), device="cpu").embeds
    assert torch.equal(encode("(ab c:1.0)", text_encoders(m, "sd15"), device="cpu").embeds, plain)


def test_sd15_clip_skip_takes_an_earlier_layer_through_the_final_norm(modules):
    from img2img_runner.conditioning import encode, text_encoders

    m = modules(SD15)
    tok, te = m["tokenizer"], m["text_encoder"]
    got = encode("ab", text_encoders(m, "sd15", clip_stop=2), device="cpu").embeds
    with torch.no_grad():
        out = te(torch.tensor([chunk(tok, "a", "b</w>")]), output_hidden_states=True)
        expected = getattr(te, "text_model", te).final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(got, expected, atol=1e-6)


def test_sdxl_joins_both_encoders_per_chunk_and_pools_the_first_chunk(modules):
    from img2img_runner.conditioning import encode, text_encoders

    m = modules(SDXL)
    words = ["a</w>"] * 75 + ["b</w>"] * 5  # 80 tokens: two chunks
    got = encode("a " * 75 + "b " * 5, text_encoders(m, "sdxl"), device="cpu")
    with torch.no_grad():
        expected = []
        for i, part in enumerate((words[:75], words[75:])):
            clip_l = m["text_encoder"](torch.tensor([chunk(m["tokenizer"], *part)]), output_hidden_states=True)
            clip_g = m["text_encoder_2"](torch.tensor([chunk(m["tokenizer_2"], *part, pad="!")]),
                                         output_hidden_states=True)
            expected.append(torch.cat([clip_l.hidden_states[-2], clip_g.hidden_states[-2]], dim=-1))
            if i == 0:
                pooled = clip_g.text_embeds
    assert got.embeds.shape == (1, 154, 64)
    # all weights are 1: the mean restoration multiplies by 1 (up to float rounding)
    assert torch.allclose(got.embeds, torch.cat(expected, dim=1), atol=1e-5)
    assert torch.allclose(got.pooled, pooled, atol=1e-6)


def test_an_empty_sdxl_negative_prompt_is_all_zeros_and_an_sd15_one_is_encoded(modules):
    from img2img_runner.conditioning import prompt_pair, text_encoders

    xl = prompt_pair("ab", "", text_encoders(modules(SDXL), "sdxl"), architecture="sdxl", batch_size=1,
                     device="cpu")
    assert not xl.negative.embeds.any() and not xl.negative.pooled.any() and xl.negative.length == 77
    spaced = prompt_pair("ab", " ", text_encoders(modules(SDXL), "sdxl"), architecture="sdxl", batch_size=1,
                         device="cpu")
    assert spaced.negative.embeds.abs().sum() > 0  # A1111 zeroes only the empty string
    sd = prompt_pair("ab", "", text_encoders(modules(SD15), "sd15"), architecture="sd15", batch_size=1,
                     device="cpu")
    assert sd.negative.embeds.abs().sum() > 0


def test_prompts_of_different_lengths_run_the_unet_once_per_length(modules):
    # A1111 runs cond and uncond separately when their chunk counts differ: padding must change nothing
    from img2img_runner.pipelines import split_by_context

    unet = modules(SD15)["unet"]
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    negative, positive = torch.randn(1, 77, 32, generator=gen), torch.randn(1, 154, 32, generator=gen)
    padded = torch.cat([torch.nn.functional.pad(negative, (0, 0, 0, 77)), positive])
    t = torch.tensor(500)
    with torch.no_grad():
        split = split_by_context(unet.forward, (77, 154), batch_size=1)(sample, t, encoder_hidden_states=padded,
                                                                          return_dict=False)[0]
        apart = torch.cat([unet(sample[:1], t, encoder_hidden_states=negative).sample,
                           unet(sample[1:], t, encoder_hidden_states=positive).sample])
        as_padded = unet(sample, t, encoder_hidden_states=padded).sample
    assert torch.allclose(split, apart, atol=1e-5)
    assert not torch.allclose(as_padded, apart, atol=1e-3)  # padding alone would change the negative's result


# --- through the runner ------------------------------------------------------------------------------------


def picture_of(run, **changes) -> np.ndarray:
    return np.asarray(run(sd15_input(**{**FAST, **changes})).images[0]).astype(int)


def test_a_weight_of_one_draws_the_plain_prompt_and_other_weights_do_not(run):
    plain = picture_of(run, prompt="an astronaut riding a horse")
    assert np.array_equal(picture_of(run, prompt="an (astronaut:1.0) riding a horse"), plain)
    assert not np.array_equal(picture_of(run, prompt="an (astronaut:1.6) riding a horse"), plain)


def test_tokens_past_75_change_the_picture(run):
    head = "a " * 75
    one = picture_of(run, prompt=head + "b")
    assert not np.array_equal(picture_of(run, prompt=head + "c"), one)  # truncating at 77 would draw these alike
    assert not np.array_equal(picture_of(run, prompt="a BREAK b"), picture_of(run, prompt="a b"))


def test_a_long_prompt_with_a_short_negative_runs_on_sdxl_with_a_refiner_and_on_sd15_with_a_controlnet(run):
    from model_samples import canny_unit

    long = "an astronaut riding a horse, " * 6  # > 75 tokens: two chunks against the negative's one
    xl = run(sd15_input(prompt=long, override_settings={"sd_model_checkpoint": SDXL},
                        refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.5, **FAST))
    assert xl.trace["batches"][0]["refiner"]
    sd = run(sd15_input(prompt="a", negative_prompt=long, alwayson_scripts={"controlnet": {"args": [canny_unit()]}},
                        **FAST))
    assert sd.trace["batches"][0]["controlnet_calls"] == [3]


def test_the_sdxl_empty_negative_prompt_is_zeroed_on_base_and_refiner(run):
    xl = dict(override_settings={"sd_model_checkpoint": SDXL})
    # "" and " " tokenize alike; only A1111's zeroing of the empty string tells them apart
    assert not np.array_equal(picture_of(run, negative_prompt="", **xl), picture_of(run, negative_prompt=" ", **xl))
    refiner_only = dict(xl, refiner_checkpoint="sd_xl_refiner_1.0", refiner_switch_at=0.1)
    assert not np.array_equal(picture_of(run, negative_prompt="", **refiner_only),
                              picture_of(run, negative_prompt=" ", **refiner_only))
    assert np.array_equal(picture_of(run, negative_prompt=""), picture_of(run, negative_prompt=" "))  # SD 1.5


def test_clip_skip_changes_sd15_and_not_sdxl(run):
    def with_clip(name: str, stop: int) -> np.ndarray:
        return picture_of(run, override_settings={"sd_model_checkpoint": name, "CLIP_stop_at_last_layers": stop})

    assert not np.array_equal(with_clip(SD15, 2), with_clip(SD15, 1))
    assert np.array_equal(with_clip(SDXL, 2), with_clip(SDXL, 1))


def test_a_prompt_edit_is_bad_input_naming_the_field(run):
    from img2img_runner.errors import BadInput

    with pytest.raises(BadInput) as exc:
        run(sd15_input(prompt="a [cat:dog:0.5]", **FAST))
    assert "prompt" in str(exc.value) and "prompt editing" in str(exc.value)
