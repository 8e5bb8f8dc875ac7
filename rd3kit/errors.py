"""Error types that carry rd3kit's exit codes. Must not print or exit: the CLI maps them to exit codes."""

from __future__ import annotations

import os


class RD3Error(Exception):
    """Base class; `exit_code` follows STYLE.md: 1 verification failed, 2 usage/config, 3 data/integrity."""

    exit_code = 2


class ConfigError(RD3Error):
    """A protocol, reference entry or command-line value is wrong (exit 2)."""

    exit_code = 2


class DataError(RD3Error):
    """An input file is missing, malformed or fails its integrity check (exit 3)."""

    exit_code = 3


class VerificationFailed(RD3Error):
    """A number did not reproduce (exit 1)."""

    exit_code = 1


def redact(text: str, token: str | None = None) -> str:
    """`text` with a token (given, or $HF_TOKEN) replaced by ***: every message that may quote a client."""
    for secret in (token, os.environ.get("HF_TOKEN")):
        text = text.replace(secret, "***") if secret else text
    return text
