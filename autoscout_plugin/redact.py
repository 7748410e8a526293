"""Secrets taken out of text AutoScout keeps: a trial's error is stored, printed and put in reports, and
a library may echo a token, a key or a database URL with its password in its exception.

Three nets, each replacing the secret with `***`:
- the value of any environment variable whose name says it is secret (`HF_TOKEN`, `AWS_SECRET_ACCESS_KEY`,
  `WANDB_API_KEY`, `PGPASSWORD`, ...), wherever it appears: whatever its format;
- well-known token shapes (Hugging Face `hf_...`, GitHub `ghp_...`, OpenAI `sk-...`, AWS `AKIA...`,
  Slack `xox?-...`, JSON web tokens);
- `password` in `scheme://user:password@host` URLs, and the value after `token=`, `api_key: `,
  `password=`, `secret=`, `Authorization: Bearer ` and the like.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH)",
                          re.IGNORECASE)
_MIN_ENV_SECRET = 6
"""Shorter environment values are not searched for: `1`, `true`, `cpu` would mask ordinary words."""
_TOKENS = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|sk-[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@]+(@)")
"""A password may hold `/`, `+` and `=` (a base64 one): it runs to the `@` before the host."""
_ASSIGNED = re.compile(
    r"(?i)(\b[\w-]*(?:token|api[_-]?key|secret|password|passwd|pwd|credentials?)[\w-]*[\"']?\s*[:=]\s*[\"']?)"
    r"(?!\*\*\*)[^\s\"',;)}\]]+")
_BEARER = re.compile(r"(?i)(\b(?:bearer|basic|token)\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}")


def redact(text: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """`text` with every secret it holds replaced by `***` (None stays None).

    Example:
        >>> redact("connect to postgresql://tuner:s3cr3t@db:5432/runs failed; token=abc123")
        'connect to postgresql://tuner:***@db:5432/runs failed; token=***'
    """
    if not text:
        return text
    env = os.environ if environ is None else environ
    secrets = sorted({v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_ENV_SECRET},
                     key=len, reverse=True)  # the longest first: one secret may contain another
    for value in secrets:
        text = text.replace(value, MASK)
    text = _TOKENS.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<2>", text)
    text = _ASSIGNED.sub(rf"\g<1>{MASK}", text)
    return _BEARER.sub(rf"\g<1>{MASK}", text)


__all__ = ["MASK", "redact"]
