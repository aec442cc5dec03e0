"""Prompt text -> the text conditioning A1111 1.10 gives the UNet (modules/sd_hijack_clip.py, sd_hijack_open_clip.py,
sd_emphasis.py, sd_models_xl.py).

For each text encoder of the checkpoint (SD 1.5: CLIP-L; SDXL: CLIP-L and CLIP-G; SDXL refiner: CLIP-G):

1. the prompt is split into emphasis pieces (``img2img.api.prompts.parse_emphasis``); each piece is tokenized on its
   own, without start/end tokens;
2. the tokens fill chunks of 75; ``BREAK`` starts a new chunk; when a chunk is full and a comma lies within the last
   20 tokens, the tokens after the comma move to the next chunk (A1111's "prompt word wrap length limit", default
   20); each chunk is start + 75 tokens + end, padded with the end token, and after the first end token with the
   tokenizer's pad token (CLIP-G pads with 0 after it, CLIP-L with the end token);
3. each chunk is encoded on its own: SD 1.5 the last layer (clip skip n: layer -n, then the final layer norm),
   SDXL the penultimate layer of both encoders; every token's vector is multiplied by its piece's weight and the
   chunk is rescaled so that its mean is what it was before ("Original" emphasis, A1111's default);
4. the chunks are concatenated along the tokens (77 per chunk); SDXL joins the two encoders along the features and
   takes the pooled vector from CLIP-G's first chunk.

SDXL's negative conditioning is all zeros when the negative prompt is empty (``force_zero_embeddings``), pooled
vector included, for the base and the refiner alike.

When the prompt and the negative prompt have a different number of chunks A1111 runs the UNet on each separately;
``PromptPair`` pads the shorter one for diffusers' batch and says how long each really is, and
``pipelines.split_by_context`` runs the UNet and the ControlNets on each part with its own length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from img2img.api.prompts import BREAK, Piece, parse_emphasis

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20  # A1111 option comma_padding_backtrack, default 20


@dataclass(frozen=True)
class Chunk:
    tokens: tuple[int, ...]  # CHUNK_TOKENS + 2: start, tokens, end and padding
    multipliers: tuple[float, ...]


@dataclass(frozen=True)
class Vocabulary:
    """The token ids chunking needs, from a tokenizer."""

    start: int
    end: int
    pad: int
    comma: int | None

    @classmethod
    def of(cls, tokenizer: Any) -> "Vocabulary":
        return cls(start=tokenizer.bos_token_id, end=tokenizer.eos_token_id, pad=tokenizer.pad_token_id,
                   comma=tokenizer.get_vocab().get(",</w>"))


def chunk_pieces(pieces: Sequence[Piece], tokenize: Callable[[str], list[int]], vocab: Vocabulary,
                 backtrack: int = COMMA_BACKTRACK) -> list[Chunk]:
    """The 77-token chunks of a parsed prompt, as A1111's ``tokenize_line`` builds them."""
    chunks: list[Chunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    last_comma = -1  # position in `tokens` of the chunk's last comma

    def close_chunk() -> None:
        nonlocal tokens, weights, last_comma
        fill = CHUNK_TOKENS - len(tokens)
        ids = [vocab.start, *tokens, *([vocab.end] * fill), vocab.end]
        first_end = ids.index(vocab.end)
        ids[first_end + 1:] = [vocab.pad] * (len(ids) - first_end - 1)
        chunks.append(Chunk(tuple(ids), (1.0, *weights, *([1.0] * fill), 1.0)))
        tokens, weights, last_comma = [], [], -1

    for text, weight in pieces:
        if (text, weight) == BREAK:
            close_chunk()
            continue
        for token in tokenize(text):
            if token == vocab.comma:
                last_comma = len(tokens)
            elif (backtrack and len(tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(tokens) - last_comma <= backtrack):
                moved = tokens[last_comma + 1:], weights[last_comma + 1:]
                tokens, weights = tokens[:last_comma + 1], weights[:last_comma + 1]
                close_chunk()
                tokens, weights = list(moved[0]), list(moved[1])
            if len(tokens) == CHUNK_TOKENS:
                close_chunk()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close_chunk()
    return chunks


@dataclass(frozen=True)
class TextEncoder:
    """One of a checkpoint's text encoders, as A1111 reads it."""

    tokenizer: Any
    model: Any  # transformers CLIPTextModel / CLIPTextModelWithProjection
    layer: int | None  # hidden_states index; None = the last layer's output (final layer norm included)
    final_norm: bool = False  # apply the final layer norm to `layer` (SD 1.5 clip skip)
    pooled: bool = False  # this encoder gives the pooled vector (SDXL's CLIP-G)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def text_encoders(modules: dict[str, Any], architecture: str, clip_stop: int = 1) -> list[TextEncoder]:
    """The encoders A1111 conditions ``architecture`` with; ``clip_stop`` is CLIP_stop_at_last_layers (SD 1.5)."""
    if architecture == "sd15":
        if clip_stop > 1:
            return [TextEncoder(modules["tokenizer"], modules["text_encoder"], layer=-clip_stop, final_norm=True)]
        return [TextEncoder(modules["tokenizer"], modules["text_encoder"], layer=None)]
    encoders = []
    if modules.get("text_encoder") is not None:  # the SDXL base; the refiner has CLIP-G only
        encoders.append(TextEncoder(modules["tokenizer"], modules["text_encoder"], layer=-2))
    encoders.append(TextEncoder(modules["tokenizer_2"], modules["text_encoder_2"], layer=-2, pooled=True))
    return encoders


@dataclass
class TextConditioning:
    embeds: torch.Tensor  # (1, 77 * chunks, features), float32
    pooled: torch.Tensor | None  # (1, features), float32; SDXL only

    @property
    def length(self) -> int:
        return self.embeds.shape[1]

    def zeros(self) -> "TextConditioning":
        return TextConditioning(torch.zeros_like(self.embeds),
                                None if self.pooled is None else torch.zeros_like(self.pooled))


def emphasize(z: torch.Tensor, multipliers: Sequence[float]) -> torch.Tensor:
    """A1111's "Original" emphasis: weight each token's vector, then restore the chunk's mean. As in A1111 the mean
    before is taken in the encoder's dtype and the rest is float32 (the multiplier tensor's dtype)."""
    mean_before = z.mean()
    z = z * torch.tensor(multipliers, dtype=torch.float32, device=z.device).reshape(1, -1, 1)
    return z * (mean_before / z.mean())


@torch.no_grad()
def encode(text: str, encoders: Sequence[TextEncoder], *, device: Any) -> TextConditioning:
    """One prompt's conditioning (batch of one), as A1111 encodes it."""
    pieces = parse_emphasis(text)
    per_encoder, pooled = [], None
    for encoder in encoders:
        vocab = Vocabulary.of(encoder.tokenizer)
        zs = []
        for i, chunk in enumerate(chunk_pieces(pieces, encoder.tokenize, vocab)):
            ids = torch.tensor([chunk.tokens], device=device)
            out = encoder.model(ids, output_hidden_states=encoder.layer is not None)
            if encoder.layer is None:
                z = out.last_hidden_state
            else:
                z = out.hidden_states[encoder.layer]
                if encoder.final_norm:
                    # transformers 5 has the layer norm on the model itself; 4.x under .text_model
                    z = getattr(encoder.model, "text_model", encoder.model).final_layer_norm(z)
            if encoder.pooled and i == 0:
                pooled = out.text_embeds.float()
            zs.append(emphasize(z, chunk.multipliers))
        per_encoder.append(torch.cat(zs, dim=1))
    lengths = {z.shape[1] for z in per_encoder}
    if len(lengths) != 1:
        raise ValueError(f"the text encoders split the prompt into different chunk counts: {sorted(lengths)}")
    return TextConditioning(torch.cat(per_encoder, dim=-1), pooled)


@dataclass
class PromptPair:
    """A batch's conditioning for the pipeline: prompt and negative prompt, padded to one length."""

    positive: TextConditioning
    negative: TextConditioning
    batch_size: int

    @property
    def lengths(self) -> tuple[int, int]:
        """(negative, positive) context lengths: the order of diffusers' CFG batch."""
        return self.negative.length, self.positive.length

    def pipeline_kwargs(self, dtype: torch.dtype) -> dict[str, Any]:
        length = max(self.lengths)

        def batch(z: torch.Tensor) -> torch.Tensor:
            padded = torch.nn.functional.pad(z, (0, 0, 0, length - z.shape[1]))
            return padded.expand(self.batch_size, -1, -1).to(dtype)

        kwargs = {"prompt_embeds": batch(self.positive.embeds), "negative_prompt_embeds": batch(self.negative.embeds)}
        if self.positive.pooled is not None:
            kwargs["pooled_prompt_embeds"] = self.positive.pooled.expand(self.batch_size, -1).to(dtype)
            kwargs["negative_pooled_prompt_embeds"] = self.negative.pooled.expand(self.batch_size, -1).to(dtype)
        return kwargs


def prompt_pair(prompt: str, negative_prompt: str, encoders: Sequence[TextEncoder], *, architecture: str,
                batch_size: int, device: Any) -> PromptPair:
    """The conditioning of a batch whose images share one prompt and one negative prompt."""
    positive = encode(prompt, encoders, device=device)
    if architecture != "sd15" and negative_prompt == "":
        negative = encode("", encoders, device=device).zeros()  # sd_models_xl: force_zero_embeddings
    else:
        negative = encode(negative_prompt, encoders, device=device)
    return PromptPair(positive=positive, negative=negative, batch_size=batch_size)
