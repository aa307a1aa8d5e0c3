"""The metadata filters every query kind takes: one :class:`Filters` value, checked once,
bound as the filter parameters of the query files (queries/search_photos.sql and its
siblings write every filter as `{name:Type} IS NULL OR ...`)."""

from __future__ import annotations

import dataclasses
from typing import Any
import datetime as dt
from collections.abc import Sequence

import numpy as np

from ..errors import BadArgument
from .checks import check_date, check_float, check_int, check_text

ORIENTATIONS = ("landscape", "portrait", "square")


@dataclasses.dataclass(frozen=True)
class Filters:
    """Optional metadata filters, the same for every query kind; None (or ()) = no filter.

    Strings match exactly. Dates are UTC calendar days, both ends inclusive.

    Attributes:
        country, city: photo_location_country / photo_location_city.
        photographer: photographer_username.
        submitted_from, submitted_to: photo_submitted_at date range (date or 'YYYY-MM-DD').
        orientation: 'landscape' (width > height), 'portrait' (width < height) or 'square'.
        min_aspect_ratio, max_aspect_ratio: photo_aspect_ratio (width / height) range.
        min_width, min_height: pixels.
        min_views, min_downloads: stats_views / stats_downloads.
        featured: True only featured photos, False only the others.
        camera_make, camera_model: exif_camera_make / exif_camera_model.
        keywords_any: photos tagged with at least one of these keywords.
        keywords_all: photos tagged with every one of these keywords.
        color: dominant color, the colors.keyword of the photo's largest coverage (e.g. 'black').
        has_description: True only photos with a photo_description, False only without.
    """

    country: str | None = None
    city: str | None = None
    photographer: str | None = None
    submitted_from: dt.date | str | None = None
    submitted_to: dt.date | str | None = None
    orientation: str | None = None
    min_aspect_ratio: float | None = None
    max_aspect_ratio: float | None = None
    min_width: int | None = None
    min_height: int | None = None
    min_views: int | None = None
    min_downloads: int | None = None
    featured: bool | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    keywords_any: Sequence[str] = ()
    keywords_all: Sequence[str] = ()
    color: str | None = None
    has_description: bool | None = None

    @classmethod
    def of(cls, filters: Filters | None = None, **values) -> Filters:
        """`filters` with `values` (keyword filters) applied on top, checked.

        Raises:
            BadArgument: an unknown filter name or a value of the wrong type or range.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BadArgument(f"unknown filter {', '.join(unknown)}; filters are {', '.join(sorted(names))}")
        if filters is not None and not isinstance(filters, Filters):
            raise BadArgument(f"filters must be a clipsql.search.Filters, got {type(filters).__name__}")
        base = filters or cls()
        return dataclasses.replace(base, **values).checked()

    def checked(self) -> Filters:
        """A copy with values normalized (dates parsed, keyword lists as tuples).

        Raises:
            BadArgument: a value of the wrong type or range.
        """
        out: dict[str, Any] = {}
        for name in ("country", "city", "photographer", "camera_make", "camera_model", "color", "orientation"):
            value = getattr(self, name)
            out[name] = None if value is None else check_text(name, value)
        if out["orientation"] is not None and out["orientation"] not in ORIENTATIONS:
            raise BadArgument(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {out['orientation']!r}")
        for name in ("submitted_from", "submitted_to"):
            value = getattr(self, name)
            out[name] = None if value is None else check_date(name, value)
        if out["submitted_from"] and out["submitted_to"] and out["submitted_from"] > out["submitted_to"]:
            raise BadArgument(f"submitted_from {out['submitted_from']} is after submitted_to {out['submitted_to']}")
        for name in ("min_aspect_ratio", "max_aspect_ratio"):
            value = getattr(self, name)
            out[name] = None if value is None else check_float(name, value, 0.0, 1e6)
        if (
            out["min_aspect_ratio"] is not None
            and out["max_aspect_ratio"] is not None
            and out["min_aspect_ratio"] > out["max_aspect_ratio"]
        ):
            raise BadArgument("min_aspect_ratio is larger than max_aspect_ratio")
        for name, high in (
            ("min_width", 2**32 - 1),
            ("min_height", 2**32 - 1),
            ("min_views", 2**64 - 1),
            ("min_downloads", 2**64 - 1),
        ):
            value = getattr(self, name)
            out[name] = None if value is None else check_int(name, value, 0, high)
        for name in ("featured", "has_description"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (bool, np.bool_)):
                raise BadArgument(f"{name} must be True, False or None, got {value!r}")
            out[name] = None if value is None else bool(value)
        for name in ("keywords_any", "keywords_all"):
            value = getattr(self, name)
            if value is None:
                value = ()
            elif isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)):
                raise BadArgument(f"{name} must be a list of strings, got {type(value).__name__}")
            out[name] = tuple(check_text(name, v) for v in value)
        return dataclasses.replace(self, **out)

    @property
    def active(self) -> bool:
        """True when at least one filter is set."""
        return any(v not in (None, ()) for v in dataclasses.asdict(self).values())

    def params(self) -> dict:
        """The filter parameters of the query files: {name: value}, NULL/[] for 'no filter'."""
        values = dataclasses.asdict(self)
        for name in ("keywords_any", "keywords_all"):
            values[name] = list(values[name])
        return values
