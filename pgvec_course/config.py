"""Every setting the course reads from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The repository root when the package is installed in place (pip install -e .),
# which is how the course is meant to be used; otherwise a folder in $HOME.
_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent
HOME_DIR = _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").exists() else Path.home() / ".pgvec-course"


@dataclass(frozen=True)
class Settings:
    """The environment, read once per call to `settings()`."""

    database_url: str | None
    data_dir: Path
    grader_data_dir: Path
    cache_dir: Path
    hidden_dir: Path | None
    openai_api_key: str | None
    openai_base_url: str | None
    embedder: str | None
    openai_model: str
    chat_model: str


def settings() -> Settings:
    """Read the course's settings from the environment."""
    env = os.environ
    return Settings(
        database_url=env.get("DATABASE_URL") or None,
        data_dir=Path(env.get("PGVEC_DATA_DIR") or HOME_DIR / ".pgdata").expanduser(),
        # The autograder's own server: password-only, never the learner's trust-auth one.
        grader_data_dir=Path(env.get("PGVEC_GRADER_DATA_DIR") or HOME_DIR / ".pgdata-grader").expanduser(),
        cache_dir=Path(env.get("PGVEC_CACHE_DIR") or HOME_DIR / ".cache").expanduser(),
        # The instructor's hidden tests (default: the repository's solutions/hidden/).
        hidden_dir=Path(env["PGVEC_HIDDEN_DIR"]).expanduser() if env.get("PGVEC_HIDDEN_DIR") else None,
        openai_api_key=env.get("OPENAI_API_KEY") or None,
        openai_base_url=env.get("OPENAI_BASE_URL") or None,
        embedder=(env.get("PGVEC_EMBEDDER") or "").strip().lower() or None,
        openai_model=env.get("PGVEC_OPENAI_MODEL") or "text-embedding-3-small",
        chat_model=env.get("PGVEC_CHAT_MODEL") or "gpt-4o-mini",
    )
