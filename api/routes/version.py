"""GET /version: which citywatch answers, on which Python, with which stored-data schema: what an operator
checks after an upgrade, and what a bug report should quote. Open like /healthz (nothing in it is secret
that the package itself does not publish)."""

from __future__ import annotations

import platform
from importlib import metadata

from fastapi import APIRouter
from pydantic import BaseModel, Field

import core
from store.sqlite_store import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

router = APIRouter(tags=["health"])


class VersionOut(BaseModel):
    version: str = Field(description="The citywatch release.", examples=["0.1.0"])
    python: str = Field(description="The Python version running it.", examples=["3.11.9"])
    schemas: dict[str, int] = Field(
        description="Schema version of each store this release reads and writes: `sqlite_store` is the "
                    "embedded store's (migrated forward when an older file is opened).",
        examples=[{"sqlite_store": 3}])


def citywatch_version() -> str:
    """The installed distribution's version; the package's own when run from a source tree."""
    try:
        return metadata.version("citywatch")
    except metadata.PackageNotFoundError:
        return core.__version__


@router.get("/version", response_model=VersionOut, summary="citywatch, Python and schema versions")
def version() -> VersionOut:
    return VersionOut(version=citywatch_version(), python=platform.python_version(),
                      schemas={"sqlite_store": SQLITE_SCHEMA_VERSION})
