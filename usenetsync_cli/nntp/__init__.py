"""usenetsync's own NNTP client (DESIGN.md §3, §7).

Owns: the public surface of the nntp layer. ``connection`` holds the session
(``ServerSpec``, ``Connection``), ``response`` the wire parsing and the reply
code -> typed error table, ``bodies`` the checked result of a decoded BODY
(``Article``), ``retry`` the backoff schedule.

Invariants: callers import from here, not from the submodules; every failure
raised by this package is an ``NNTPError`` (``.retryable``,
``.fatal_for_server``) and a ``usenetsync_cli.errors.UsenetSyncError``.
"""

from __future__ import annotations

from .bodies import Article, RawNeeded
from .connection import BODY_MAX_BYTES, Connection, GroupInfo, ServerSpec, valid_message_id
from .response import (
    MISSING_CODES,
    ArticleMissing,
    ArticleRefused,
    AuthFailed,
    AuthRequired,
    ConnectFailed,
    ConnectionLost,
    DuplicateArticle,
    NNTPError,
    NNTPProtocolError,
    NNTPTimeout,
    PostingNotAllowed,
    PostRejected,
    Reader,
    ReplyTooLarge,
    Response,
    ServiceClosing,
    ServiceUnavailable,
    TLSError,
    TLSVerifyFailed,
    TooManyConnections,
    TransientError,
    describe_command,
    dot_stuff,
    dot_unstuff,
    normalize_crlf,
    parse_status,
    raise_for,
    wire_buffers,
)
from .retry import Backoff

__all__ = [
    "BODY_MAX_BYTES",
    "MISSING_CODES",
    "Article",
    "ArticleMissing",
    "ArticleRefused",
    "AuthFailed",
    "AuthRequired",
    "Backoff",
    "ConnectFailed",
    "Connection",
    "ConnectionLost",
    "DuplicateArticle",
    "GroupInfo",
    "NNTPError",
    "NNTPProtocolError",
    "NNTPTimeout",
    "PostRejected",
    "PostingNotAllowed",
    "RawNeeded",
    "Reader",
    "ReplyTooLarge",
    "Response",
    "ServerSpec",
    "ServiceClosing",
    "ServiceUnavailable",
    "TLSError",
    "TLSVerifyFailed",
    "TooManyConnections",
    "TransientError",
    "describe_command",
    "dot_stuff",
    "dot_unstuff",
    "normalize_crlf",
    "parse_status",
    "raise_for",
    "valid_message_id",
    "wire_buffers",
]
