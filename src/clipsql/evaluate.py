"""Evaluation: text -> image retrieval quality of a model on a captioned image set, in SQL.

Public entry point: :func:`evaluate` (the `clipsql eval` command calls it). It

1. reads a captions file (:func:`read_captions`): Flickr8k's ``name.jpg#0<TAB>caption``
   (Flickr8k.token.txt), the Kaggle Flickr8k CSV (``image,caption`` header), COCO captions
   JSON (``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``, an
   annotation may carry a ``"language"``) or a TSV with the header
   ``image<TAB>caption<TAB>language``; captions are UTF-8 text in any script, kept as written,
   and `language` keeps those of one language (:func:`select_language`);
2. embeds every image the captions name, and every caption, with the chosen model (images
   that are missing or undecodable are recorded with a reason, not fatal);
3. loads the set into its own tables (sql/<dialect>/003_eval.sql: eval_sets, eval_images,
   eval_captions, eval_image_embeddings, eval_caption_embeddings), replacing an earlier load
   of the same set name;
4. computes the metrics in SQL (queries/eval_metrics.sql): for each caption query the rank
   of its own image = 1 + the images strictly closer by cosine distance (ties broken by
   image_id); Recall@k = the share of queries with rank <= k; MRR = the mean of 1 / rank.

Query kinds (:data:`QUERY_KINDS`), one metrics row each:

| kind | query vector | candidates |
| --- | --- | --- |
| plain | the caption's text embedding | every image of the set |
| filtered | the caption's text embedding | only images of the correct image's orientation |
| combined | caption + 0.5 x another caption of the same image | every image |
| negative | caption - 0.5 x a caption of another image | every image |

`filtered` is the metadata pre-filter of `clipsql search --orientation` (orientation from
the decoded image size: landscape w > h, portrait w < h, square); the filter always keeps the
correct image, so it can only remove distractors: its gain over `plain` shows what a
pre-filter buys. `combined` and `negative` are `clipsql search combined` queries built with
:func:`clipsql.search.combine_vectors`: `combined` = ``"caption 0.5:other caption of the
same image"`` (query expansion with a second description of the same scene; only images with
two or more captions), `negative` = ``"caption -0.5:caption of another image"`` (the next
image by image_id: a negative term naming content that is not in the picture; a robust
model loses little recall).

The standard protocol (Karpathy & Fei-Fei 2015; the CLIP paper, Radford et al. 2021, table
13) reports text -> image Recall@1/5/10 over the 1,000 test images (5,000 captions) of
Flickr8k/Flickr30k or the 5,000 of COCO; `limit` takes the first N images of a file.

Model A/B: :func:`evaluate_models` evaluates several models on the same captioned set, one
eval set per model (``<name>@<model label>``), and lines their metrics up side by side
(:class:`ModelComparison`); :func:`compare_models` compares two stored models' top-k photos
for one text in SQL (queries/model_overlap.sql: overlap and Spearman's footrule).
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .constants import DEFAULT_MODEL
from .db import Store, use_store, vectors_array
from .embed import DEFAULT_BATCH_SIZE
from .errors import BadArgument, ModelError, NotFound, SourceError
from .images import DEFAULT_MAX_PIXELS, InvalidImage, open_rgb
from .queries import get_query

if TYPE_CHECKING:  # pandas loads with the first DataFrame made: the CLI's parser imports this module
    import pandas as pd

log = logging.getLogger(__name__)

#: Caption file formats read by :func:`read_captions`.
CAPTION_FORMATS = ("flickr8k", "csv", "coco", "tsv")
#: The columns of a TSV captions file's header line ('language' optional, any order; others ignored).
TSV_COLUMNS = ("image", "caption", "language")
#: Longest language value (a BCP 47 tag such as 'zh-Hant-TW' is far shorter; RFC 5646 section 4.4.1).
MAX_LANGUAGE_CHARS = 35
#: Query kinds: (description, query vectors of eval_caption_embeddings, same-orientation filter).
QUERY_KINDS = {
    "plain": ("the caption; every image a candidate", "plain", False),
    "filtered": ("the caption; candidates only images of the correct image's orientation", "plain", True),
    "combined": ("caption + 0.5 x another caption of the same image", "combined", False),
    "negative": ("caption - 0.5 x a caption of another image", "negative", False),
}
#: Weight of the second caption of the same image in a `combined` query.
COMBINED_WEIGHT = 0.5
#: Weight of the other image's caption (subtracted) in a `negative` query.
NEGATIVE_WEIGHT = -0.5
#: Recall cutoffs of the usual protocol (Karpathy & Fei-Fei 2015; CLIP, Radford et al. 2021).
DEFAULT_KS = (1, 5, 10)
#: Rows per insert of vectors (about 8 MB of 512-dim float32).
INSERT_ROWS = 4096
MAX_NAME_CHARS = 200
#: Largest image file read, bytes (larger ones fail with reason 'too_large').
MAX_IMAGE_BYTES = 50 * 1024 * 1024


# --- captions ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Caption:
    """One caption: the image file it describes (relative to the images folder), its text
    (UTF-8, any script, as written but for surrounding white space), where it is in the
    captions file (a line number; COCO: its index in "annotations"), and its language as the
    file gives it (a TSV's language column, a COCO annotation's "language"; None when the
    file gives none)."""

    image_id: str
    caption: str
    line: int
    language: str | None = None


def read_captions(path: str | os.PathLike, fmt: str = "auto") -> tuple[str, list[Caption]]:
    """Read a captions file.

    Formats (`fmt`, or 'auto' to tell by the suffix and the first line):

    - 'flickr8k': ``1000268201_693b08cb0e.jpg#0<TAB>A child in a pink dress ...`` per line
      (Flickr8k.token.txt; the ``#N`` is optional);
    - 'csv': the Kaggle Flickr8k captions.txt, a header ``image,caption`` then one
      ``name.jpg,caption`` per row (quoted or not; an unquoted caption may hold commas);
    - 'coco': COCO captions JSON, ``{"images": [{"id", "file_name"}, ...],
      "annotations": [{"image_id", "caption"}, ...]}``, captions in annotation order; an
      annotation may carry ``"language": "de"`` (a file without it is of one language);
    - 'tsv': a header line naming the tab-separated columns ``image``, ``caption`` and,
      optionally, ``language`` (any order; other columns ignored), then one row per caption
      (no quoting: a field holds no tab), e.g. ``img1.jpg<TAB>Ein Hund am Strand<TAB>de``.

    Blank lines are skipped; captions are stripped of surrounding white space and otherwise
    kept as written: UTF-8 text in any script (Chinese, Arabic, emoji), no normalization.

    Returns:
        (the format read, the captions in file order).

    Raises:
        NotFound: no such file.
        BadArgument: an unknown format.
        SourceError: a malformed file: the message names the file and the line (COCO: the
            JSON line of a syntax error, else the entry, e.g. ``annotations[17]``).
    """
    path = Path(path)
    if fmt not in ("auto",) + CAPTION_FORMATS:
        raise BadArgument(f"captions format must be auto, {', '.join(CAPTION_FORMATS)}, got {fmt!r}")
    if not path.is_file():
        raise NotFound(f"captions file {str(path)[:300]!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if fmt == "auto":
        fmt = _detect_format(path, text)
    reader = {"flickr8k": _read_flickr8k, "csv": _read_csv, "coco": _read_coco, "tsv": _read_tsv}[fmt]
    captions = reader(path, text)
    if not captions:
        raise SourceError(f"{path}:1: no captions in the file")
    return fmt, captions


def _detect_format(path: Path, text: str) -> str:
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return "coco"
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.strip().lower().replace(" ", "") == "image,caption":
        return "csv"
    if path.suffix.lower() == ".tsv" or {"image", "caption"} <= _tsv_header(first):
        return "tsv"
    if "\t" in first:
        return "flickr8k"
    line = next((n for n, line in enumerate(text.splitlines(), 1) if line.strip()), 1)
    raise SourceError(
        f"{path}:{line}: cannot tell the captions format: the first line is neither "
        f"'name.jpg#0<TAB>caption' (Flickr8k), the header 'image,caption' (CSV), the header "
        f"'image<TAB>caption<TAB>language' (TSV) nor COCO JSON; give the format"
    )


def _tsv_header(line: str) -> set[str]:
    """The column names of a TSV header line, lower-cased."""
    return {cell.strip().lower() for cell in line.split("\t")} if "\t" in line else set()


def _fail(path: Path, line: int | str, message: str) -> SourceError:
    return SourceError(f"{path}:{line}: {message}")


def _image_name(path: Path, line: int | str, name) -> str:
    """A file name from a captions file, checked: relative, inside the images folder."""
    if not isinstance(name, str) or not name.strip():
        raise _fail(path, line, f"the image file name is empty or not text: {name!r}")
    name = name.strip()
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if "\x00" in name or len(name) > 1000 or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise _fail(path, line, f"image file name {name[:200]!r} must be a relative path inside the images folder")
    return name


def _caption_text(path: Path, line: int | str, text) -> str:
    if not isinstance(text, str) or not text.strip():
        raise _fail(path, line, f"the caption is empty or not text: {text!r}"[:300])
    if "\x00" in text:
        raise _fail(path, line, "the caption holds a NUL character")
    return text.strip()


_FLICKR_NAME_RE = re.compile(r"^(.+?)#(\d+)$")


def _read_flickr8k(path: Path, text: str) -> list[Caption]:
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if "\t" not in raw:
            raise _fail(path, number, f"expected 'name.jpg#N<TAB>caption' (Flickr8k), got {raw[:120]!r}")
        name, caption = raw.split("\t", 1)
        m = _FLICKR_NAME_RE.match(name.strip())
        image = m.group(1) if m else name
        out.append(Caption(_image_name(path, number, image), _caption_text(path, number, caption), number))
    return out


def _read_csv(path: Path, text: str) -> list[Caption]:
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header_seen = False
    try:
        for row in reader:
            number = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if not header_seen:
                if [c.strip().lower() for c in row] != ["image", "caption"]:
                    raise _fail(path, number, f"expected the header 'image,caption', got {','.join(row)[:120]!r}")
                header_seen = True
                continue
            if len(row) < 2:
                raise _fail(path, number, f"expected 'name.jpg,caption', got {','.join(row)[:120]!r}")
            # An unquoted caption with commas splits into more fields: they are one caption.
            out.append(
                Caption(_image_name(path, number, row[0]), _caption_text(path, number, ",".join(row[1:])), number)
            )
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"malformed CSV: {exc}") from None
    return out


def _read_coco(path: Path, text: str) -> list[Caption]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if (
        not isinstance(document, dict)
        or not isinstance(document.get("images"), list)
        or not isinstance(document.get("annotations"), list)
    ):
        raise _fail(path, 1, 'COCO captions JSON must be an object with the lists "images" and "annotations"')
    files: dict = {}
    for index, entry in enumerate(document["images"]):
        where = f"images[{index}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise _fail(path, where, 'an image needs "id" and "file_name"')
        key = entry["id"]
        if not isinstance(key, (int, str)) or isinstance(key, bool):
            raise _fail(path, where, f'"id" must be a number or text, got {key!r}')
        if key in files:
            raise _fail(path, where, f"image id {key!r} appears twice")
        files[key] = _image_name(path, where, entry["file_name"])
    out = []
    for index, entry in enumerate(document["annotations"]):
        where = f"annotations[{index}]"
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise _fail(path, where, 'an annotation needs "image_id" and "caption"')
        key = entry["image_id"]
        if isinstance(key, bool) or not isinstance(key, (int, str)) or key not in files:
            raise _fail(path, where, f'image_id {key!r} is not the "id" of an entry of "images"')
        language = _language(path, where, entry.get("language"))
        out.append(Caption(files[key], _caption_text(path, where, entry["caption"]), index, language))
    return out


def _read_tsv(path: Path, text: str) -> list[Caption]:
    out = []
    columns: dict[str, int] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        cells = raw.split("\t")
        if columns is None:
            names = [cell.strip().lower() for cell in cells]
            if "image" not in names or "caption" not in names or len(set(names)) != len(names):
                raise _fail(path, number, f"expected the header 'image<TAB>caption<TAB>language', got {raw[:120]!r}")
            columns = {name: names.index(name) for name in TSV_COLUMNS if name in names}
            continue
        if len(cells) <= max(columns.values()):
            needed = max(columns.values()) + 1
            raise _fail(path, number, f"expected {needed} tab-separated fields, got {len(cells)}: {raw[:120]!r}")
        language = _language(path, number, cells[columns["language"]]) if "language" in columns else None
        out.append(
            Caption(
                _image_name(path, number, cells[columns["image"]]),
                _caption_text(path, number, cells[columns["caption"]]),
                number,
                language,
            )
        )
    return out


def _language(path: Path, line: int | str, value) -> str | None:
    """A caption's language as the file writes it (stripped); None for none or an empty field."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > MAX_LANGUAGE_CHARS or "\x00" in value:
        raise _fail(path, line, f"the language must be text of at most {MAX_LANGUAGE_CHARS} characters, got {value!r}")
    return value.strip() or None


def check_language(language) -> str:
    """`language` stripped, when it is text of 1 to :data:`MAX_LANGUAGE_CHARS` characters.

    Raises:
        BadArgument: not text, empty, too long or holding a NUL.
    """
    if not isinstance(language, str) or not language.strip() or len(language.strip()) > MAX_LANGUAGE_CHARS:
        raise BadArgument(f"language must be 1 to {MAX_LANGUAGE_CHARS} characters of text, got {language!r}")
    if "\x00" in language:
        raise BadArgument("language contains a NUL character")
    return language.strip()


def select_language(
    captions: Sequence[Caption], language: str, source: str | os.PathLike = "the file"
) -> list[Caption]:
    """The captions of one language, in order. Languages compare without regard to case (BCP 47
    tags are case-insensitive, RFC 5646 section 2.1.1): 'de' keeps 'de' and 'DE', not 'de-AT'.

    Args:
        captions: as :func:`read_captions` returns them. language: e.g. 'de', 'zh', 'ar'.
        source: the captions file, named in the error.

    Raises:
        BadArgument: a bad language value, or no caption of that language (the message lists
            the languages the captions have).
    """
    wanted = check_language(language).casefold()
    kept = [c for c in captions if c.language is not None and c.language.casefold() == wanted]
    if not kept:
        found = sorted({c.language for c in captions if c.language is not None})
        unmarked = sum(c.language is None for c in captions)
        have = ", ".join(found[:20]) or "none"
        raise BadArgument(
            f"no caption of {str(source)[:300]} is in language {language.strip()!r}; its languages: {have}"
            + (f" ({unmarked} captions without a language)" if unmarked else "")
        )
    return kept


def _limited(captions: list[Caption], limit: int | None) -> tuple[list[str], list[Caption]]:
    """(image ids in order of first appearance, captions) of the first `limit` images."""
    images: dict[str, None] = {}
    for c in captions:
        if c.image_id not in images:
            if limit is not None and len(images) >= limit:
                continue
            images[c.image_id] = None
    return list(images), [c for c in captions if c.image_id in images]


# --- the report --------------------------------------------------------------------------


@dataclasses.dataclass
class EvalReport:
    """What :func:`evaluate` measured.

    Attributes:
        name: the eval set (eval_sets.eval_set).
        model: the label of the model evaluated; model_source: what it was loaded from.
        store: where the set is (:attr:`clipsql.db.Store.description`).
        images_dir, captions_file, captions_format: the inputs.
        ks: the three recall cutoffs.
        metrics: one row per query kind (:data:`QUERY_KINDS`): query_kind, description,
            queries, recall@k for each k (share 0..1), mrr (0..1), mean_rank,
            mean_candidates; NaN where a kind has no query.
        counts: images (in the captions file, after `limit`), images_ok, images_failed,
            captions, captions_evaluated (captions whose image has a vector),
            captions_skipped (the others).
        failures: the images that could not be embedded: image_id, reason, detail, captions
            (how many captions lost their query).
        timings: seconds per stage (read, model (loading it, when evaluate loaded it),
            embed_images, embed_texts, load, metrics, total).
        language: the language the captions were chosen by (None: every caption of the file).
    """

    name: str
    model: str
    model_source: str
    store: str
    images_dir: str
    captions_file: str
    captions_format: str
    ks: tuple[int, int, int]
    metrics: pd.DataFrame
    counts: dict[str, int]
    failures: pd.DataFrame
    timings: dict[str, float]
    language: str | None = None

    @property
    def failure_reasons(self) -> dict[str, int]:
        """Failed images per reason, most first."""
        import pandas as pd

        counts = self.failures["reason"].value_counts() if len(self.failures) else pd.Series(dtype="int64")
        return {str(k): int(v) for k, v in counts.items()}

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (NaN -> None)."""

        def clean(value):
            if isinstance(value, (float, np.floating)):
                return None if not math.isfinite(float(value)) else float(value)
            if isinstance(value, np.integer):
                return int(value)
            return value

        records = [{k: clean(v) for k, v in row.items()} for row in self.metrics.to_dict(orient="records")]
        failures = [{k: clean(v) for k, v in row.items()} for row in self.failures.to_dict(orient="records")]
        return {
            "name": self.name,
            "model": self.model,
            "model_source": self.model_source,
            "store": self.store,
            "images_dir": self.images_dir,
            "captions_file": self.captions_file,
            "captions_format": self.captions_format,
            "language": self.language,
            "ks": list(self.ks),
            "counts": dict(self.counts),
            "metrics": records,
            "failure_reasons": self.failure_reasons,
            "failures": failures,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "rank": "1 + images strictly closer by cosine distance, ties broken by image_id",
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 2) -> str:
        """The report as JSON; also written to `path` (folders created) when given."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return text

    def format(self) -> str:
        """A text table of the metrics with a header line and the failures, for the terminal."""
        c = self.counts
        language = f" in language {self.language!r}" if self.language is not None else ""
        lines = [
            f"eval set {self.name!r}, model {self.model}, {self.store}: {c['images']} images "
            f"({c['images_failed']} failed), {c['captions']} captions{language}, "
            f"{c['captions_evaluated']} with an image"
        ]
        shown = self.metrics.drop(columns=["description"])
        lines.append(shown.to_string(index=False, float_format=lambda x: f"{x:.4f}", na_rep="-"))
        if c["images_failed"]:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.failure_reasons.items())
            lines.append(
                f"{c['images_failed']} images failed ({reasons}); {c['captions_skipped']} captions without a query"
            )
            for row in self.failures.head(5).itertuples(index=False):
                lines.append(f"  {row.image_id}: {row.reason}: {str(row.detail)[:120]}")
            if len(self.failures) > 5:
                lines.append(f"  ... {len(self.failures) - 5} more (see the JSON report or queries/eval_failures.sql)")
        lines.append("query kinds: " + "; ".join(f"{k} = {d[0]}" for k, d in QUERY_KINDS.items()))
        return "\n".join(lines)


# --- evaluate ----------------------------------------------------------------------------


def default_name(images_dir: str | os.PathLike, language: str | None = None) -> str:
    """The eval set name `clipsql eval` uses without --name: the images folder's name, and
    with a language ``<folder>-<language>`` (so each language of a file is a set of its own)."""
    base = Path(images_dir).resolve().name or "eval"
    return base if language is None else f"{base}-{language}"


def evaluate(
    images_dir: str | os.PathLike,
    captions_file: str | os.PathLike,
    *,
    model: str = DEFAULT_MODEL,
    model_name: str | None = None,
    embedder=None,
    name: str | None = None,
    captions_format: str = "auto",
    language: str | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    ks: Sequence[int] = DEFAULT_KS,
    kinds: Sequence[str] | None = None,
    store: str | os.PathLike | None = None,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    wait_s: float | None = None,
    db: Store | None = None,
    progress: bool = True,
) -> EvalReport:
    """Evaluate text -> image retrieval on a captioned image set; the metrics are computed in SQL.

    Loads the set into the eval tables of the store (replacing an earlier load of the same
    `name`), then runs queries/eval_metrics.sql once per query kind (module docstring).

    Args:
        images_dir: the folder of the image files the captions name.
        captions_file: Flickr8k token file, Kaggle Flickr8k CSV or COCO captions JSON
            (:func:`read_captions`).
        model: CLIP hub name or local checkpoint directory (when no `embedder` is given).
        model_name: the label stored for the model (default: the hub name / folder name).
        embedder: a ready model instead: any object with ``embed_images(list of PIL) -> (n, d)``
            and ``embed_texts(list of str) -> (n, d)`` float32 L2-normalized arrays and
            attributes ``name`` (label) and ``dim`` (d); e.g. a :class:`clipsql.embed.ClipEmbedder`.
        name: the eval set's name (default :func:`default_name`: the images folder's name,
            ``<folder>-<language>`` with a language).
        captions_format: 'auto', 'flickr8k', 'csv', 'coco' or 'tsv'.
        language: only the captions of this language (:func:`select_language`: a TSV's
            language column, a COCO annotation's "language"); default every caption.
        limit: only the first N images of the captions file (in order of first mention) and
            their captions (after the language is chosen).
        batch_size: images (and texts) per model call.
        device: where the model runs (auto, cpu, cuda[:N], mps), when no `embedder` is given.
        ks: the three Recall@k cutoffs, default (1, 5, 10).
        kinds: the query kinds to measure (default all of :data:`QUERY_KINDS`); each costs
            one exact scan of captions x images (4 to 7 s for 5,000 x 1,000 on 2 cores).
        store / clickhouse_url / duckdb / db: the backend, as :func:`clipsql.search.text`;
            wait_s: seconds to wait for a store another process holds (default 300).
        progress: show progress bars.

    Returns:
        An :class:`EvalReport` (``.metrics`` DataFrame, ``.to_json()``, ``.format()``).

    Raises:
        NotFound: no captions file or images folder.
        SourceError: a malformed captions file (file and line in the message).
        BadArgument: a bad name, language, limit, batch size or ks, an embedder lacking the
            interface, or no caption of the language.
        ModelError: the model cannot be loaded, or returns vectors of the wrong shape.
        StoreError: the store cannot be opened.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise NotFound(f"images folder {str(images_dir)[:300]!r} does not exist")
    language = check_language(language) if language is not None else None
    name = default_name(images_dir, language) if name is None else name
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise BadArgument(f"eval set name must be 1 to {MAX_NAME_CHARS} characters of text, got {name!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BadArgument(f"limit must be a positive integer or None, got {limit!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadArgument(f"batch_size must be a positive integer, got {batch_size!r}")
    ks = tuple(ks)
    if len(ks) != 3 or any(
        isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= 1_000_000 for k in ks
    ):
        raise BadArgument(f"ks must be three cutoffs from 1 to 1,000,000, got {ks!r}")
    cutoffs = (int(ks[0]), int(ks[1]), int(ks[2]))
    kinds = _check_kinds(kinds)
    if embedder is not None:
        for attribute in ("embed_images", "embed_texts", "name", "dim"):
            if not hasattr(embedder, attribute):
                raise BadArgument(f"embedder must have embed_images, embed_texts, name and dim; it lacks {attribute}")

    t0 = time.perf_counter()
    fmt, captions = read_captions(captions_file, captions_format)
    if language is not None:
        captions = select_language(captions, language, captions_file)
    image_ids, captions = _limited(captions, limit)
    timings["read"] = time.perf_counter() - t0
    log.info(
        "read %d captions of %d images from %s (%s) in %.2f s",
        len(captions),
        len(image_ids),
        captions_file,
        fmt,
        timings["read"],
    )

    # The store first: one that cannot be opened (a chdb path held by another process) fails
    # before minutes of embedding.
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as opened:
        if embedder is None:
            from .embed import ClipEmbedder

            t0 = time.perf_counter()
            embedder = ClipEmbedder(model, device=device, name=model_name, progress=progress)
            timings["model"] = time.perf_counter() - t0
        label = str(model_name or embedder.name)
        model_source = str(getattr(embedder, "source", label))
        dim = int(embedder.dim)

        t0 = time.perf_counter()
        images = _embed_images(images_dir, image_ids, embedder, dim, batch_size, progress)
        timings["embed_images"] = time.perf_counter() - t0
        ok_images = {i: k for k, i in enumerate(images.ok_ids)}
        evaluated = [(cid, c) for cid, c in enumerate(captions) if c.image_id in ok_images]

        t0 = time.perf_counter()
        # Shortest first: a batch pads to its longest text, so similar lengths waste little.
        texts = sorted({c.caption for _, c in evaluated}, key=lambda text: (len(text), text))
        text_vectors = _embed_texts(texts, embedder, dim, batch_size, progress)
        vector_of = {t: text_vectors[k] for k, t in enumerate(texts)}
        queries = query_vectors(evaluated, vector_of, sorted(ok_images))
        timings["embed_texts"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        version = _next_version(opened, name)
        _write_set(opened, name, version, images, captions, queries, label)
        # eval_sets last: it points the queries at this load (sql/*/003_eval.sql).
        _write(
            opened,
            "eval_sets",
            pa.table(
                {
                    "eval_set": [name],
                    "images_dir": [str(images_dir.resolve())],
                    "captions_file": [str(Path(captions_file).resolve())],
                    "captions_format": [fmt],
                    "model": [label],
                    "model_source": [model_source],
                    "dim": pa.array([dim], pa.uint16()),
                    "images": pa.array([len(image_ids)], pa.uint64()),
                    "images_failed": pa.array([len(images.failures)], pa.uint64()),
                    "captions": pa.array([len(captions)], pa.uint64()),
                    "loaded_at": pa.array([int(time.time() * 1000)], pa.timestamp("ms", tz="UTC")),
                    "version": pa.array([version], pa.uint64()),
                }
            ),
        )
        timings["load"] = time.perf_counter() - t0
        log.info(
            "loaded eval set %r (version %d) into %s in %.2f s", name, version, opened.description, timings["load"]
        )

        t0 = time.perf_counter()
        metrics = metrics_frame(opened, name, ks=cutoffs, kinds=kinds, progress=progress)
        failures = get_query("eval_failures").run(opened, eval_set=name)
        timings["metrics"] = time.perf_counter() - t0
        description = opened.description
    log.info("metrics of eval set %r in %.2f s", name, timings["metrics"])
    timings["total"] = time.perf_counter() - started
    failures = failures.astype({"captions": "int64"}).reset_index(drop=True)
    counts = {
        "images": len(image_ids),
        "images_ok": len(images.ok_ids),
        "images_failed": len(images.failures),
        "captions": len(captions),
        "captions_evaluated": len(evaluated),
        "captions_skipped": len(captions) - len(evaluated),
    }
    if not evaluated:
        log.warning("eval set %r has no caption whose image could be embedded: every metric is NaN", name)
    return EvalReport(
        name=name,
        model=label,
        model_source=model_source,
        store=description,
        images_dir=str(images_dir),
        captions_file=str(captions_file),
        captions_format=fmt,
        ks=cutoffs,
        metrics=metrics,
        counts=counts,
        failures=failures,  # type: ignore[arg-type]
        timings=timings,
        language=language,
    )


def _check_kinds(kinds: Sequence[str] | None) -> list[str]:
    if kinds is None:
        return list(QUERY_KINDS)
    chosen = [kinds] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in chosen if k not in QUERY_KINDS]
    if bad or not chosen:
        raise BadArgument(f"query kinds must be among {', '.join(QUERY_KINDS)}, got {chosen!r}")
    return list(dict.fromkeys(chosen))


def metrics_frame(
    db: Store, name: str, *, ks: Sequence[int] = DEFAULT_KS, kinds: Sequence[str] | None = None, progress: bool = False
) -> pd.DataFrame:
    """Run queries/eval_metrics.sql for each query kind of a loaded eval set.

    Args:
        db: an open store holding the set. name: the eval set.
        ks: the three recall cutoffs. kinds: the query kinds (default all of :data:`QUERY_KINDS`).
        progress: show a progress bar (one step per kind).

    Returns:
        DataFrame query_kind, description, queries, recall@k (x3, shares 0..1), mrr (0..1),
        mean_rank, mean_candidates; one row per kind, NaN where a kind has no query.

    Raises:
        BadArgument: an unknown kind.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    k1, k2, k3 = (int(k) for k in ks)
    rows = []
    for kind in tqdm(_check_kinds(kinds), desc="metrics", unit="kind", disable=not progress):
        description, vectors, same_orientation = QUERY_KINDS[kind]
        t0 = time.perf_counter()
        frame = get_query("eval_metrics").run(
            db, eval_set=name, query_kind=vectors, same_orientation=same_orientation, k_1=k1, k_2=k2, k_3=k3
        )
        row = frame.iloc[0]
        queries = int(row["queries"])

        def value(column, row=row, queries=queries):
            v = row[column]
            return float("nan") if queries == 0 or v is None or pd.isna(v) else float(v)

        rows.append(
            {
                "query_kind": kind,
                "description": description,
                "queries": queries,
                f"recall@{k1}": value("recall_at_k_1"),
                f"recall@{k2}": value("recall_at_k_2"),
                f"recall@{k3}": value("recall_at_k_3"),
                "mrr": value("mrr"),
                "mean_rank": value("mean_rank"),
                "mean_candidates": value("mean_candidates"),
            }
        )
        log.debug("eval_metrics %s: %d queries in %.2f s", kind, queries, time.perf_counter() - t0)
    return pd.DataFrame(rows)


def ranks_frame(db: Store, name: str, query_kind: str = "plain") -> pd.DataFrame:
    """Per-caption ranks of a loaded eval set (queries/eval_ranks.sql) joined with the captions.

    Returns:
        DataFrame caption_id, image_id, caption, distance (cosine, 0..2), rank, candidates;
        by caption_id.

    Raises:
        BadArgument: an unknown query kind.
    """
    if query_kind not in QUERY_KINDS:
        raise BadArgument(f"query kind must be one of {', '.join(QUERY_KINDS)}, got {query_kind!r}")
    _, vectors, same_orientation = QUERY_KINDS[query_kind]
    return get_query("eval_ranks").run(db, eval_set=name, query_kind=vectors, same_orientation=same_orientation)


# --- model A/B -------------------------------------------------------------------------


@dataclasses.dataclass
class ModelComparison:
    """What :func:`evaluate_models` measured: several models on the same captioned set.

    Attributes:
        name: the comparison's name; each model's eval set is ``<name>@<model label>``.
        reports: one :class:`EvalReport` per model, in the order the models were given.
    """

    name: str
    reports: list[EvalReport]

    @property
    def models(self) -> list[str]:
        """The model labels, in the order given."""
        return [r.model for r in self.reports]

    @property
    def metrics(self) -> pd.DataFrame:
        """Long form: the column model, then the columns of :attr:`EvalReport.metrics`; the
        rows of each model in turn."""
        import pandas as pd

        frames = [r.metrics.assign(model=r.model) for r in self.reports]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame[["model"] + [c for c in frame.columns if c != "model"]] if frames else frame

    def side_by_side(self) -> pd.DataFrame:
        """The metrics side by side: one row per (query_kind, metric), one column per model
        (its label), so the models' values of one metric stand on one line.

        Returns:
            DataFrame query_kind, metric, then one float column per model; the metrics
            queries, recall@k (shares 0..1, the report's three cutoffs), mrr (0..1), mean_rank,
            mean_candidates; NaN where a kind has no query.
        """
        import pandas as pd

        rows = []
        first = self.reports[0]
        metric_names = ["queries"] + [f"recall@{k}" for k in first.ks] + ["mrr", "mean_rank", "mean_candidates"]
        by_model = [r.metrics.set_index("query_kind") for r in self.reports]
        for kind in first.metrics["query_kind"]:
            for metric in metric_names:
                row: dict = {"query_kind": kind, "metric": metric}
                for report, frame in zip(self.reports, by_model):
                    row[report.model] = float(frame.at[kind, metric]) if kind in frame.index else float("nan")
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """Everything as JSON-ready values (NaN -> None): the side-by-side table and each model's report."""
        table = [
            {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in self.side_by_side().to_dict(orient="records")
        ]
        return {
            "name": self.name,
            "models": self.models,
            "side_by_side": table,
            "reports": [r.to_dict() for r in self.reports],
        }

    def to_json(self, path: str | os.PathLike | None = None, *, indent: int = 2) -> str:
        """The comparison as JSON; also written to `path` (folders created) when given."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"
        if path is not None:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return text

    def format(self) -> str:
        """The side-by-side table for the terminal: a header line per model, the table, the failures."""
        lines = [f"{len(self.reports)} models on eval set {self.name!r}:"]
        for r in self.reports:
            c = r.counts
            language = f" in language {r.language!r}" if r.language is not None else ""
            lines.append(
                f"  {r.model} ({r.model_source}): eval set {r.name!r}, {c['images']} images "
                f"({c['images_failed']} failed), {c['captions']} captions{language}, "
                f"{c['captions_evaluated']} with an image"
            )

        def cell(metric: str, value: float) -> str:
            if not math.isfinite(value):
                return "-"
            if metric == "queries":
                return str(int(value))
            return f"{value:.2f}" if metric.startswith("mean_") else f"{value:.4f}"

        table = self.side_by_side()
        shown = table.copy().astype({m: object for m in self.models})
        for m in self.models:
            shown[m] = [cell(metric, value) for metric, value in zip(table["metric"], table[m])]
        lines.append(shown.to_string(index=False))
        first = self.reports[0]
        if first.counts["images_failed"]:
            reasons = ", ".join(f"{r}: {n}" for r, n in first.failure_reasons.items())
            lines.append(f"{first.counts['images_failed']} images failed ({reasons}; see the JSON report)")
        lines.append("query kinds: " + "; ".join(f"{k} = {d[0]}" for k, d in QUERY_KINDS.items()))
        return "\n".join(lines)


def evaluate_models(
    images_dir: str | os.PathLike,
    captions_file: str | os.PathLike,
    models: Sequence[str],
    *,
    model_names: Sequence[str] | None = None,
    name: str | None = None,
    captions_format: str = "auto",
    language: str | None = None,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    ks: Sequence[int] = DEFAULT_KS,
    kinds: Sequence[str] | None = None,
    store: str | os.PathLike | None = None,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    wait_s: float | None = None,
    db: Store | None = None,
    progress: bool = True,
) -> ModelComparison:
    """Evaluate several models on the same captioned set and line their metrics up side by side.

    Each model is loaded in turn (one in memory at a time) and evaluated as :func:`evaluate`
    does, into an eval set of its own named ``<name>@<model label>`` (the eval tables hold
    one model per set), on the same captions, images, language and limit.

    Args:
        models: CLIP hub names or local checkpoint directories, one or more, no label twice.
        model_names: the labels stored for them (default :func:`clipsql.embed.model_label`:
            the hub name / directory name), as many as `models`.
        name: the comparison's name (default :func:`default_name`).
        Others: as :func:`evaluate`.

    Returns:
        A :class:`ModelComparison` (``.side_by_side()``, ``.metrics``, ``.reports``,
        ``.format()``, ``.to_json()``).

    Raises:
        BadArgument: no model, a label twice, model_names of another length, a name too long
            with a label, or a bad argument of :func:`evaluate`.
        ModelError: a model directory that does not exist (all are checked before any work),
            or a model that cannot be loaded.
        NotFound, SourceError, StoreError: as :func:`evaluate`.
    """
    from .embed import check_device_name, check_model_source, model_label

    if isinstance(models, (str, os.PathLike)) or not models:
        raise BadArgument(f"models must be a list of one or more model names or directories, got {models!r}")
    models = [os.fspath(m) if isinstance(m, os.PathLike) else m for m in models]
    for m in models:
        if not isinstance(m, str) or not m.strip() or "\x00" in m:
            raise BadArgument(f"a model must be a non-empty hub name or directory, got {m!r}")
    if model_names is not None and (isinstance(model_names, str) or len(model_names) != len(models)):
        raise BadArgument(f"model_names must name each of the {len(models)} models, got {model_names!r}")
    labels = [str(n) for n in model_names] if model_names is not None else [model_label(m) for m in models]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise BadArgument(f"each model needs a label of its own; {', '.join(map(repr, twice))} is given twice")
    check_device_name(device)
    for m in models:
        check_model_source(m)
    language = check_language(language) if language is not None else None
    base = default_name(images_dir, language) if name is None else name
    if not isinstance(base, str) or not base.strip():
        raise BadArgument(f"eval set name must be 1 to {MAX_NAME_CHARS} characters of text, got {base!r}")
    set_names = [f"{base}@{label}" for label in labels]
    too_long = [n for n in set_names if len(n) > MAX_NAME_CHARS or "\x00" in n]
    if too_long:
        raise BadArgument(
            f"eval set name {too_long[0][:250]!r} (<name>@<model label>) is over {MAX_NAME_CHARS} characters"
        )

    reports = []
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as opened:
        for number, (model, label, set_name) in enumerate(zip(models, labels, set_names), 1):
            log.info("model %d of %d: %s (eval set %r)", number, len(models), label, set_name)
            reports.append(
                evaluate(
                    images_dir,
                    captions_file,
                    model=model,
                    model_name=label,
                    name=set_name,
                    captions_format=captions_format,
                    language=language,
                    limit=limit,
                    batch_size=batch_size,
                    device=device,
                    ks=ks,
                    kinds=kinds,
                    db=opened,
                    progress=progress,
                )
            )
    return ModelComparison(name=base, reports=reports)


def compare_models(
    text: str,
    model_a: str,
    model_b: str,
    k: int = 10,
    *,
    device: str = "auto",
    db: Store | None = None,
    store: str | os.PathLike | None = None,
    clickhouse_url: str | None = None,
    duckdb: str | os.PathLike | None = None,
    wait_s: float | None = None,
) -> pd.DataFrame:
    """Model A/B on one text query over the store's photos: how far two stored models agree
    on its top-k (queries/model_overlap.sql).

    The text is embedded by each model's own checkpoint (its text tower, the model's source
    as stored: :func:`clipsql.search.resolve_model`, :func:`clipsql.embed.cached_embedder`),
    so models of different widths compare; each model's top-k is exact (cosine distance,
    ties by photo_id, deleted photos left out), as an unfiltered search gives it.

    Args:
        text: the query, e.g. "a dog on a beach".
        model_a, model_b: stored model labels (or sources); the same twice gives overlap 1.
        k: the length of the top lists compared (1..10,000).
        device: where the text models run (auto, cpu, cuda[:N], mps).
        db / store / clickhouse_url / duckdb / wait_s: the backend, as :func:`clipsql.search.text`.

    Returns:
        A one-row DataFrame: model_a, model_b (the labels), k, top_a, top_b (photos in each
        top-k), overlap (photos in both), overlap_share (overlap / the longer list: |A n B| / k
        when both models hold k photos; 0..1), footrule (Spearman's footrule F^(k+1) of Fagin,
        Kumar & Sivakumar 2003: the sum of |rank_a - rank_b| over the photos of either list,
        a missing photo ranked k + 1), footrule_similarity (1 - footrule / its value for
        disjoint lists; 1 = the same photos in the same order, 0 = none in common).

    Raises:
        BadArgument: an empty text or model name, a bad k or device.
        NotFound: a model with no vectors in the store.
        ModelError: a model's checkpoint cannot be loaded.
    """
    from .embed import cached_embedder, check_device_name
    from .search import check_query_vector, resolve_model
    from .search.checks import check_k, check_text

    check_text("query text", text, allow_empty=False)
    check_text("model_a", model_a, allow_empty=False)
    check_text("model_b", model_b, allow_empty=False)
    k = check_k(k)
    check_device_name(device)
    with use_store(db, store, clickhouse_url=clickhouse_url, duckdb=duckdb, wait_s=wait_s) as opened:
        vectors = {}
        labels = []
        for side, model in (("a", model_a), ("b", model_b)):
            label, source, dim = resolve_model(opened, model)
            vector = cached_embedder(source, label, device, towers="text").embed_texts([text])[0]
            vectors[f"query_{side}"] = check_query_vector(vector, dim, model=label)
            labels.append(label)
        frame = get_query("model_overlap").run(
            opened, model_a=labels[0], model_b=labels[1], k=k, query_a=vectors["query_a"], query_b=vectors["query_b"]
        )
    frame.insert(0, "model_a", labels[0])
    frame.insert(1, "model_b", labels[1])
    return frame


# --- stages ------------------------------------------------------------------------------


@dataclasses.dataclass
class _Images:
    ok_ids: list[str]
    vectors: np.ndarray
    sizes: dict[str, tuple[int, int]]
    failures: dict[str, tuple[str, str]]


def _decode(images_dir: Path, image_ids: Sequence[str]) -> tuple[list[str], list, list[tuple[int, int]], dict]:
    ids, pictures, sizes, failures = [], [], [], {}
    for image_id in image_ids:
        path = images_dir / image_id
        try:
            if not path.is_file():
                failures[image_id] = ("missing", f"no file {path}")
                continue
            if path.stat().st_size > MAX_IMAGE_BYTES:
                failures[image_id] = ("too_large", f"{path}: over {MAX_IMAGE_BYTES} bytes")
                continue
            picture = open_rgb(path.read_bytes(), max_pixels=DEFAULT_MAX_PIXELS)
        except InvalidImage as exc:
            failures[image_id] = (exc.reason, f"{path}: {exc.detail}")
            continue
        except OSError as exc:
            failures[image_id] = ("unreadable", f"{path}: {exc.strerror or exc}")
            continue
        ids.append(image_id)
        pictures.append(picture)
        sizes.append(picture.size)
    return ids, pictures, sizes, failures


def _checked(vectors, n: int, dim: int, what: str) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (n, dim):
        raise ModelError(f"the model returned {what} vectors of shape {array.shape}, expected ({n}, {dim})")
    if not np.all(np.isfinite(array)):
        raise ModelError(f"the model returned {what} vectors with NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise ModelError(f"the model returned a zero {what} vector: it has no direction")
    return (array / norms).astype(np.float32)  # L2-normalized, as the embedders promise


def _embed_images(
    images_dir: Path, image_ids: Sequence[str], embedder, dim: int, batch_size: int, progress: bool
) -> _Images:
    """Decode and embed the images, the next batch decoded in a thread while the model runs."""
    from tqdm.auto import tqdm

    batches = [image_ids[i : i + batch_size] for i in range(0, len(image_ids), batch_size)]
    ok_ids: list[str] = []
    parts: list[np.ndarray] = []
    sizes: dict[str, tuple[int, int]] = {}
    failures: dict[str, tuple[str, str]] = {}
    infer_s = 0.0
    with (
        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="eval-decode") as pool,
        tqdm(total=len(image_ids), desc="embed images", unit="image", disable=not progress) as bar,
    ):
        pending = pool.submit(_decode, images_dir, batches[0]) if batches else None
        for number in range(len(batches)):
            ids, pictures, batch_sizes, batch_failures = pending.result()  # type: ignore[union-attr]
            pending = pool.submit(_decode, images_dir, batches[number + 1]) if number + 1 < len(batches) else None
            failures.update(batch_failures)
            if pictures:
                t0 = time.perf_counter()
                parts.append(_checked(embedder.embed_images(pictures), len(pictures), dim, "image"))
                infer_s += time.perf_counter() - t0
                ok_ids += ids
                sizes.update(zip(ids, batch_sizes))
            bar.update(len(batches[number]))
    if failures:
        log.warning(
            "%d of %d images could not be embedded (first: %s)",
            len(failures),
            len(image_ids),
            "; ".join(f"{k}: {r}" for k, (r, _) in list(failures.items())[:3]),
        )
    log.info("embedded %d images (%.2f s in the model)", len(ok_ids), infer_s)
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return _Images(ok_ids, vectors, sizes, failures)


def _embed_texts(texts: Sequence[str], embedder, dim: int, batch_size: int, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    parts = []
    with tqdm(total=len(texts), desc="embed captions", unit="caption", disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            parts.append(_checked(embedder.embed_texts(batch), len(batch), dim, "text"))
            bar.update(len(batch))
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def query_vectors(
    evaluated: Sequence[tuple[int, Caption]], vector_of: dict[str, np.ndarray], image_order: Sequence[str]
) -> dict[str, tuple[list[int], np.ndarray]]:
    """The query vectors of each stored kind ('plain', 'combined', 'negative'), per caption.

    - plain: the caption's vector.
    - combined: ``combine_vectors([(caption, 1), (next caption of the same image, 0.5)])``,
      the next by caption_id, cyclic; only images with two or more captions.
    - negative: ``combine_vectors([(caption, 1), (first caption of the next image, -0.5)])``,
      the next image in `image_order`, cyclic; only with two or more images.

    Args:
        evaluated: (caption_id, caption) of the captions whose image has a vector.
        vector_of: caption text -> (d,) float32 L2-normalized vector.
        image_order: the images with a vector, sorted by image_id.

    Returns:
        {kind: (caption_ids, (n, d) float32 L2-normalized vectors)}.
    """
    from .search import combine_vectors

    by_image: dict[str, list[tuple[int, Caption]]] = {}
    for cid, caption in evaluated:
        by_image.setdefault(caption.image_id, []).append((cid, caption))
    images = [i for i in image_order if i in by_image]
    next_image = {image: images[(k + 1) % len(images)] for k, image in enumerate(images)} if len(images) > 1 else {}
    out: dict[str, tuple[list[int], list[np.ndarray]]] = {"plain": ([], []), "combined": ([], []), "negative": ([], [])}
    for image, group in by_image.items():
        for position, (cid, caption) in enumerate(group):
            own = vector_of[caption.caption]
            out["plain"][0].append(cid)
            out["plain"][1].append(own)
            if len(group) > 1:
                other = vector_of[group[(position + 1) % len(group)][1].caption]
                _add(out["combined"], cid, combine_vectors, [(own, 1.0), (other, COMBINED_WEIGHT)])
            if image in next_image:
                negative = vector_of[by_image[next_image[image]][0][1].caption]
                _add(out["negative"], cid, combine_vectors, [(own, 1.0), (negative, NEGATIVE_WEIGHT)])
    result = {}
    for kind, (ids, vectors) in out.items():
        order = np.argsort(ids, kind="stable")
        dim = len(next(iter(vector_of.values()))) if vector_of else 0
        matrix = np.stack(vectors)[order] if vectors else np.zeros((0, dim), np.float32)
        result[kind] = ([ids[i] for i in order], matrix.astype(np.float32))
    return result


def _add(target, cid, combine, parts) -> None:
    try:
        target[0].append(cid)
        target[1].append(combine(parts))
    except BadArgument:  # the terms cancel out (the same text twice with opposite weights)
        target[0].pop()
        log.debug("caption %d: the combined terms cancel out; no query of this kind", cid)


def orientation(width: int, height: int) -> str:
    """'landscape' (width > height), 'portrait' (width < height) or 'square', as
    :class:`clipsql.search.Filters` defines them."""
    return "landscape" if width > height else "portrait" if width < height else "square"


# --- writing -----------------------------------------------------------------------------


def _next_version(db: Store, name: str) -> int:
    """The load's version: its start in ms, above the set's last load (a rerun in the same ms
    still replaces it)."""
    last = get_query("eval_sets").run(db, eval_set=name)
    previous = int(last["version"].iloc[0]) if len(last) else 0
    return max(int(time.time() * 1000), previous + 1)


def _write(db: Store, table: str, data: pa.Table) -> None:
    """Upsert rows into an eval table, INSERT_ROWS at a time."""
    for start in range(0, data.num_rows, INSERT_ROWS):
        db.upsert(table, data.slice(start, INSERT_ROWS))


def _write_set(
    db: Store,
    name: str,
    version: int,
    images: _Images,
    captions: Sequence[Caption],
    queries: dict[str, tuple[list[int], np.ndarray]],
    model: str,
) -> None:
    versions = lambda n: pa.array(np.full(n, version, dtype=np.uint64))  # noqa: E731
    ids = list(images.sizes) + list(images.failures)
    widths = [images.sizes[i][0] if i in images.sizes else None for i in ids]
    heights = [images.sizes[i][1] if i in images.sizes else None for i in ids]
    _write(
        db,
        "eval_images",
        pa.table(
            {
                "eval_set": [name] * len(ids),
                "image_id": ids,
                "width": pa.array(widths, pa.uint32()),
                "height": pa.array(heights, pa.uint32()),
                "orientation": [orientation(*images.sizes[i]) if i in images.sizes else None for i in ids],
                "status": ["ok" if i in images.sizes else "failed" for i in ids],
                "reason": [images.failures[i][0] if i in images.failures else None for i in ids],
                "detail": [images.failures[i][1][:2000] if i in images.failures else None for i in ids],
                "version": versions(len(ids)),
            }
        ),
    )
    _write(
        db,
        "eval_captions",
        pa.table(
            {
                "eval_set": [name] * len(captions),
                "caption_id": pa.array(range(len(captions)), pa.uint32()),
                "image_id": [c.image_id for c in captions],
                "caption": [c.caption for c in captions],
                "line": pa.array([c.line for c in captions], pa.uint32()),
                "version": versions(len(captions)),
            }
        ),
    )
    n = len(images.ok_ids)
    _write(
        db,
        "eval_image_embeddings",
        pa.table(
            {
                "eval_set": [name] * n,
                "image_id": images.ok_ids,
                "model": [model] * n,
                "embedding": vectors_array(images.vectors),
                "version": versions(n),
            }
        ),
    )
    for kind, (caption_ids, vectors) in queries.items():
        m = len(caption_ids)
        _write(
            db,
            "eval_caption_embeddings",
            pa.table(
                {
                    "eval_set": [name] * m,
                    "query_kind": [kind] * m,
                    "caption_id": pa.array(caption_ids, pa.uint32()),
                    "model": [model] * m,
                    "embedding": vectors_array(vectors),
                    "version": versions(m),
                }
            ),
        )


def default_json_path(store_root: str | os.PathLike, name: str) -> Path:
    """Where `clipsql eval` writes its JSON report without --json: <store>/eval/<name>.json
    (characters other than letters, digits, '.', '_' and '-' become '_')."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "eval"
    return Path(store_root) / "eval" / f"{safe}.json"


__all__ = [
    "CAPTION_FORMATS",
    "QUERY_KINDS",
    "Caption",
    "EvalReport",
    "ModelComparison",
    "check_language",
    "compare_models",
    "default_json_path",
    "default_name",
    "evaluate",
    "evaluate_models",
    "metrics_frame",
    "query_vectors",
    "ranks_frame",
    "read_captions",
    "select_language",
]
