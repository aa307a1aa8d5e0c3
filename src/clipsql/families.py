"""The image-text dual-encoder families clipsql loads, and what differs between them.

transformers 5 gives every family the same two calls, ``get_image_features`` and
``get_text_features``, each returning an output object whose ``pooler_output`` is the
embedding (a tensor in 4.x). What still differs is kept here, in one table
(:data:`FAMILIES`), keyed by the checkpoint config's ``model_type``:

- the embedding width: ``projection_dim`` for most; SigLIP and SigLIP 2 have no separate
  projection (the text head's ``projection_size`` and the vision tower's ``hidden_size``);
  ALIGN's image embedding is the vision tower's pooled output (``hidden_dim``), its text
  embedding a projection to ``projection_dim``; a checkpoint whose two widths differ is refused;
- text padding: SigLIP and SigLIP 2 were trained on texts padded to ``max_length`` (64
  tokens; their model cards: "the model was trained with padding='max_length'"), the others
  on the longest text of the batch;
- where the text positions start: XLM-R-style position ids (AltCLIP) begin after the
  padding index, so two of ``max_position_embeddings`` are never usable;
- which transformers class holds one tower alone (with its projection), so that a process
  that only embeds text (a query, the SQL function) loads about half the weights; families
  without such a class load whole and let go of the other tower (:data:`TOWER_PARTS`).

Nothing here imports torch or transformers: :func:`family_of_config_file` reads a local
checkpoint's config.json, so a checkpoint that is no dual encoder is refused before any work.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from .errors import ModelError

#: The towers a process may load: both (evaluation), the text tower (queries, the SQL
#: function) or the image tower (the refresh).
TOWERS = ("both", "text", "image")


@dataclasses.dataclass(frozen=True)
class Family:
    """One dual-encoder family.

    Attributes:
        model_type: the ``model_type`` of its transformers config ("clip", "siglip", ...).
        title: its name in messages and docs.
        text_class / image_class: the transformers class that loads that tower alone, with its
            projection, from a whole checkpoint (None: load whole, drop the other tower).
        text_output / image_output: the output attribute of that class holding the embedding.
        pad_to_max_length: texts are padded to the text tower's length, as trained.
        lowercase_text: texts are lowercased first, as trained (SigLIP 2's model card: "the
            model was trained with lowercased text").
        position_offset: text positions lost to the padding offset (XLM-R: 2).
        attention: the attention implementation per sub-config to load with (None: the
            transformers default). AIMv2's text tower must run "eager": with "sdpa" and no
            padding in a batch, transformers 5.24 drops its causal mask (Aimv2Attention has
            is_causal=False), so a text alone embeds differently from the same text in a padded
            batch (measured: 0.57 max abs difference of the raw features; tests/test_families.py).
        example: a public checkpoint of the family (its hub name).
    """

    model_type: str
    title: str
    text_class: str | None = None
    text_output: str = "text_embeds"
    image_class: str | None = None
    image_output: str = "image_embeds"
    pad_to_max_length: bool = False
    lowercase_text: bool = False
    position_offset: int = 0
    attention: dict[str, str] | None = None
    example: str = ""


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family(
            "clip",
            "CLIP",
            "CLIPTextModelWithProjection",
            "text_embeds",
            "CLIPVisionModelWithProjection",
            "image_embeds",
            example="openai/clip-vit-base-patch32",
        ),
        Family(
            "siglip",
            "SigLIP",
            "SiglipTextModel",
            "pooler_output",
            "SiglipVisionModel",
            "pooler_output",
            pad_to_max_length=True,
            example="google/siglip-base-patch16-224",
        ),
        Family(
            "siglip2",
            "SigLIP 2 (NaFlex)",
            "Siglip2TextModel",
            "pooler_output",
            "Siglip2VisionModel",
            "pooler_output",
            pad_to_max_length=True,
            lowercase_text=True,
            example="google/siglip2-base-patch16-naflex",
        ),
        Family(
            "metaclip_2",
            "MetaCLIP 2",
            "MetaClip2TextModelWithProjection",
            "text_embeds",
            "MetaClip2VisionModelWithProjection",
            "image_embeds",
            example="facebook/metaclip-2-worldwide-huge-quickgelu",
        ),
        Family("altclip", "AltCLIP", position_offset=2, example="BAAI/AltCLIP-m9"),
        Family("chinese_clip", "Chinese-CLIP", example="OFA-Sys/chinese-clip-vit-base-patch16"),
        Family("align", "ALIGN", example="kakaobrain/align-base"),
        Family(
            "aimv2",
            "AIMv2",
            attention={"": "sdpa", "text_config": "eager", "vision_config": "sdpa"},
            example="apple/aimv2-large-patch14-224-lit",
        ),
    )
}

#: The attributes of a whole model that belong to each tower: what is let go when only the
#: other tower is wanted and the family has no class for one tower alone.
TOWER_PARTS = {"text": ("text_model", "text_projection"), "image": ("vision_model", "visual_projection")}


def accepted_families() -> str:
    """The families clipsql loads, for messages: 'CLIP (clip), SigLIP (siglip), ...'."""
    return ", ".join(f"{f.title} ({f.model_type})" for f in FAMILIES.values())


def family_of(model_type: str | None, source: str) -> Family:
    """The :class:`Family` of a config's `model_type`.

    Raises:
        ModelError: `model_type` is no dual encoder clipsql knows, naming `source` and the
            families accepted.
    """
    family = FAMILIES.get(str(model_type))
    if family is None:
        raise ModelError(
            f"model {source!r} is a {model_type!r} checkpoint, not an image-text dual encoder "
            f"clipsql can load; accepted families: {accepted_families()}"
        )
    return family


def family_of_config_file(directory: str | os.PathLike) -> Family:
    """The :class:`Family` of the checkpoint in local `directory`, read from its config.json
    (no weights load, no torch import).

    Raises:
        ModelError: no readable config.json, or a model type that is no dual encoder.
    """
    path = Path(directory).expanduser() / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model directory {os.fspath(directory)!r} has no readable config.json: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: config.json is not a JSON object")
    return family_of(config.get("model_type"), os.fspath(directory))


def embedding_width(config: Any, source: str) -> int:
    """The embedding width (d) of a whole checkpoint's `config` (a transformers config).

    Raises:
        ModelError: the width is missing, not positive, or differs between the two towers
            (a query vector could not be compared with the photo vectors).
    """
    family = family_of(getattr(config, "model_type", None), source)
    text_config = getattr(config, "text_config", None)
    vision_config = getattr(config, "vision_config", None)
    if family.model_type in ("siglip", "siglip2"):
        text_width = getattr(text_config, "projection_size", None) or getattr(text_config, "hidden_size", None)
        image_width = getattr(vision_config, "hidden_size", None)
    elif family.model_type == "align":
        # ALIGN's image embedding is the EfficientNet's pooled output, unprojected: the
        # channels of its last block (vision_config.hidden_dim is the pooling kernel, not a width).
        text_width = getattr(config, "projection_dim", None)
        channels = getattr(vision_config, "out_channels", None)
        image_width = _efficientnet_channels(vision_config, channels[-1]) if channels else None
    else:
        text_width = image_width = getattr(config, "projection_dim", None)
    for tower, width in (("text", text_width), ("image", image_width)):
        if not isinstance(width, int) or width < 1:
            raise ModelError(
                f"{family.title} model {source!r}: its config gives no {tower} embedding width (got {width!r})"
            )
    if text_width != image_width:
        raise ModelError(
            f"{family.title} model {source!r} embeds text in {text_width} and images in {image_width} "
            "dimensions: a text query could not be compared with a photo"
        )
    return int(text_width)  # type: ignore[arg-type]


def _efficientnet_channels(vision_config: Any, channels: int) -> int:
    """Channels of an EfficientNet block after width scaling: EfficientNet's rounding to a
    multiple of `depth_divisor`, never more than 10% down (Tan & Le 2019, the reference
    implementation's round_filters, which transformers' ALIGN vision tower uses)."""
    divisor = int(vision_config.depth_divisor)
    scaled = channels * float(vision_config.width_coefficient)
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def text_length_limit(config: Any, tokenizer: Any, family: Family) -> int:
    """Most tokens a text may have: the text tower's position table, less the family's
    position offset, and no more than the tokenizer's own `model_max_length` when it has a
    real one (tokenizers saved without one report 1e30)."""
    text_config = getattr(config, "text_config", None) or config
    limit = int(text_config.max_position_embeddings) - family.position_offset
    own = getattr(tokenizer, "model_max_length", None)
    if isinstance(own, int) and 0 < own < limit:
        limit = own
    return limit
