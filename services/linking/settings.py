from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class LinkingSettings(ServiceSettings):
    service_name: ClassVar[str] = "linking"
    default_port: ClassVar[int] = 8104
    model_config = SettingsConfigDict(env_prefix="THREADLINE_LINKING_", extra="ignore")

    # The trained model (m, u, name frequencies); the one shipped in the package by default.
    model_path: Path | None = None
    # The three bands: at or above `link_threshold` a record links by itself; at or above
    # `review_threshold` a person decides in the review queue; below, it is a new person.
    link_threshold: float | None = Field(default=None, gt=0, lt=1)
    review_threshold: float | None = Field(default=None, gt=0, lt=1)
    # A blocking key shared by more records than this is too common to tell anyone apart:
    # resolving skips it, as a batch does (so a resolve reads at most this many per key).
    max_block: int = Field(default=400, ge=10, le=5000)
