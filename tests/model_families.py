"""Tiny random checkpoints of every dual-encoder family clipsql loads (issue 14), saved with
`save_pretrained` and so loaded through the same `from_pretrained` path as a hub name.

Each builds offline in well under a second with its family's real model, processor and
tokenizer classes. The tokenizers are trained here on a small multilingual corpus (Latin,
German, Chinese, Arabic, emoji), so that texts in those scripts go through each family's own
tokenizer class, not a stand-in: SigLIP's SiglipTokenizer (a SentencePiece model), SigLIP 2's
GemmaTokenizer, XLMRobertaTokenizer (AltCLIP, MetaCLIP 2), BertTokenizer (Chinese-CLIP,
ALIGN), CLIPTokenizer (CLIP, AIMv2).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

#: Texts the tokenizers are trained on; the tests query in the same scripts.
CORPUS = [
    "a photo of a dog on the beach",
    "ein Foto von einem Hund am Strand",
    "Straße, Größe, Übermut",
    "一只狗在海滩上的照片",
    "山上的湖和日落",
    "صورة كلب على الشاطئ",
    "🐶🌊 dog beach 🏔️",
    "mountain lake at sunset",
    "Berg See Sonnenuntergang",
]
#: Multilingual queries: Chinese, Arabic, German, emoji, mixed scripts.
QUERIES = ["一只狗", "صورة كلب", "ein Hund am Strand", "🐶🌊", "dog 狗 كلب Hund 🐶"]

#: Embedding width of each family's tiny checkpoint: all different, so a store holding two
#: families holds two widths.
WIDTHS = {
    "clip": 24,
    "siglip": 34,
    "siglip2": 36,
    "metaclip_2": 40,
    "altclip": 20,
    "chinese_clip": 48,
    "align": 32,
    "aimv2": 44,
}
FAMILY_TYPES = tuple(WIDTHS)

_SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _unigram(specials: list[str], unk: str, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk)
    tokenizer.train_from_iterator(CORPUS * 3, trainer)
    return tokenizer


def _sentencepiece_model(path: Path) -> Path:
    """A SentencePiece unigram model in SigLIP's layout (pad 0, </s> 1, <unk> 2, no BOS)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3),
        model_writer=model,
        vocab_size=70,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def _wordpiece_vocab(path: Path) -> int:
    chars = sorted(set("".join(CORPUS)) - {" "})
    words = ["dog", "photo", "beach", "mountain", "lake"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars), *words]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return len(vocab)


def _byte_level_clip_tokenizer(out: Path):
    """CLIPTokenizer over the 256 byte stand-ins (no merges): any script tokenizes."""
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    alphabet = [chr(c) for c in cs]
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt")), len(vocab)


def build_family(model_type: str, out: Path, seed: int = 0) -> Path:
    """A tiny random checkpoint of family `model_type` (a key of :data:`WIDTHS`) in `out`,
    embedding width ``WIDTHS[model_type]``; returns `out`."""
    import torch
    import transformers as T

    out.mkdir(parents=True, exist_ok=True)
    dim = WIDTHS[model_type]
    torch.manual_seed(seed)
    clip_images = T.CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    vision = dict(_SMALL, patch_size=32, image_size=64)
    if model_type == "clip":
        tokenizer, n = _byte_level_clip_tokenizer(out)
        # The text tower pools at the first end-of-text token: its id must be this vocabulary's.
        text = dict(_SMALL, vocab_size=n, max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1)
        config = T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)
        model, processor = T.CLIPModel(config), T.CLIPProcessor(image_processor=clip_images, tokenizer=tokenizer)
    elif model_type == "siglip":
        tokenizer = T.SiglipTokenizer(vocab_file=str(_sentencepiece_model(out / "spiece.model")), model_max_length=16)
        text = dict(_SMALL, hidden_size=dim, vocab_size=tokenizer.vocab_size, max_position_embeddings=16)
        config = T.SiglipConfig(
            text_config=text, vision_config=dict(_SMALL, hidden_size=dim, patch_size=16, image_size=32)
        )
        images = T.SiglipImageProcessor(size={"height": 32, "width": 32})
        model, processor = T.SiglipModel(config), T.SiglipProcessor(image_processor=images, tokenizer=tokenizer)
    elif model_type == "siglip2":
        unigram = _unigram(["<pad>", "<eos>", "<bos>", "<unk>"], "<unk>")
        tokenizer = T.GemmaTokenizer(
            tokenizer_object=unigram, eos_token="<eos>", bos_token="<bos>", unk_token="<unk>", pad_token="<pad>"
        )
        text = dict(_SMALL, hidden_size=dim, vocab_size=unigram.get_vocab_size(), max_position_embeddings=16)
        config = T.Siglip2Config(
            text_config=text, vision_config=dict(_SMALL, hidden_size=dim, patch_size=16, num_patches=16)
        )
        images = T.Siglip2ImageProcessor(max_num_patches=16, patch_size=16)
        model, processor = T.Siglip2Model(config), T.Siglip2Processor(image_processor=images, tokenizer=tokenizer)
    elif model_type in ("metaclip_2", "altclip"):
        unigram = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>")
        tokenizer = T.XLMRobertaTokenizer(tokenizer_object=unigram, model_max_length=32)
        if model_type == "metaclip_2":
            text = dict(_SMALL, vocab_size=unigram.get_vocab_size(), max_position_embeddings=32, eos_token_id=2)
            config = T.MetaClip2Config(text_config=text, vision_config=vision, projection_dim=dim)
            model, processor = (
                T.MetaClip2Model(config),
                T.CLIPProcessor(image_processor=clip_images, tokenizer=tokenizer),
            )
        else:
            text = dict(_SMALL, vocab_size=unigram.get_vocab_size(), project_dim=32, max_position_embeddings=34)
            config = T.AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=dim)
            model = T.AltCLIPModel(config)
            processor = T.AltCLIPProcessor(image_processor=clip_images, tokenizer=tokenizer)
    elif model_type in ("chinese_clip", "align"):
        n = _wordpiece_vocab(out / "vocab.txt")
        tokenizer = T.BertTokenizer(str(out / "vocab.txt"), model_max_length=32)
        if model_type == "chinese_clip":
            config = T.ChineseCLIPConfig(
                text_config=dict(_SMALL, vocab_size=n, max_position_embeddings=32),
                vision_config=vision,
                projection_dim=dim,
            )
            images = T.ChineseCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
            model, processor = (
                T.ChineseCLIPModel(config),
                T.ChineseCLIPProcessor(image_processor=images, tokenizer=tokenizer),
            )
        else:
            efficientnet = dict(image_size=32, width_coefficient=0.1, depth_coefficient=0.1)  # last block: 32 channels
            config = T.AlignConfig(
                text_config=dict(_SMALL, vocab_size=n, max_position_embeddings=32),
                vision_config=efficientnet,
                projection_dim=dim,
            )
            images = T.EfficientNetImageProcessor(size={"height": 32, "width": 32})
            model, processor = T.AlignModel(config), T.AlignProcessor(image_processor=images, tokenizer=tokenizer)
    elif model_type == "aimv2":
        tokenizer, n = _byte_level_clip_tokenizer(out)
        text = dict(_SMALL, vocab_size=n, max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1)
        config = T.Aimv2Config(
            text_config=text, vision_config=dict(_SMALL, patch_size=16, image_size=32), projection_dim=dim
        )
        images = T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        model, processor = T.Aimv2Model(config), T.CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    else:
        raise ValueError(f"no tiny builder for {model_type!r}")
    model.eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out
