"""The server's limits and switches: plain data, importable without FastAPI or torch (``--help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..errors import WordformerError, check_int

DEFAULT_MAX_TOKENS = 1024
DEFAULT_PORT = 8000
API_KEY_ENV = "WORDFORMER_API_KEY"


@dataclass
class ServeSettings:
    """What ``wordformer serve`` options set; every limit is a positive integer."""

    api_key: Optional[str] = None  # required as "Authorization: Bearer KEY" on /v1/* when set
    max_tokens: int = DEFAULT_MAX_TOKENS  # most new tokens per choice
    max_n: int = 16  # most choices per prompt
    max_rows_per_request: int = 64  # prompts x n
    max_prompt_chars: int = 100_000  # characters (or token ids) per prompt
    max_body_bytes: int = 1_000_000  # request body cap (413 above)
    max_rows: int = 256  # sequences decoding at once, all requests together (429 above)
    cors_origins: Sequence[str] = field(default_factory=tuple)  # CORS off unless origins are given
    gather_s: float = 0.0  # an idle model thread may wait this long for companions (0: later ones join at step 2)
    threads: Optional[int] = None  # torch threads for batched steps (default: all cores but one, for the event loop)

    def __post_init__(self) -> None:
        for name in ("max_tokens", "max_n", "max_rows_per_request", "max_prompt_chars", "max_body_bytes", "max_rows"):
            check_int("--" + name.replace("_", "-"), getattr(self, name))
        if self.api_key is not None and not self.api_key.strip():
            raise WordformerError(f"the API key is empty; give a non-empty --api-key (or unset {API_KEY_ENV})")
        if self.api_key is not None and (self.api_key != self.api_key.strip() or not self.api_key.isprintable()):
            raise WordformerError("the API key has spaces at its ends or control characters; a header cannot carry "
                                  "it exactly: choose another")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise WordformerError(f"--cors-origin {origin!r} is not an origin: give e.g. http://localhost:3000")
