"""What an HTTP request's body may be, decided from its headers before it is read.

Prism reads JSON (``application/json``) and GraphQL multipart uploads
(``multipart/form-data``). Media types and parameter names are case-insensitive
(RFC 9110 §8.3.1): ``APPLICATION/JSON`` is JSON. A JSON body is UTF-8 (RFC 8259 §8.1):
a ``charset`` other than UTF-8 is refused with 415 rather than decoded, so one decoder
reads every body and no body means two things. A ``Content-Encoding`` other than
``identity`` (gzip, deflate, br) is refused with 415: decompressing would let a small
body expand past the size limits, which count bytes as they arrive.

Also the multipart parser's refusals (Starlette's), each given a status and a code.
"""

from __future__ import annotations

from cross_web.content_type import parse_content_type

UTF8 = frozenset({"utf-8", "utf8"})
MULTIPART = "multipart/form-data"

SUBSCRIPTIONS_OVER_WEBSOCKET = (
    "Subscriptions run over the WebSocket at /graphql (subprotocol graphql-transport-ws), "
    "not over HTTP."
)


def media_type(raw: bytes | str | None) -> tuple[str, dict[str, str]]:
    """A Content-Type header's media type (lower case) and parameters (names in lower
    case, values as sent)."""
    if raw is None:
        return "", {}
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return parse_content_type(text)


def with_media_type_lowercased(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """ASGI headers whose Content-Type's media type is in lower case (its parameters, a
    multipart boundary among them, as sent): the GraphQL view compares it verbatim."""
    lowered = []
    for name, value in headers:
        if name == b"content-type":
            media, separator, parameters = value.partition(b";")
            value = media.strip().lower() + separator + parameters
        lowered.append((name, value))
    return lowered


def is_multipart(raw: bytes | str | None) -> bool:
    return media_type(raw)[0] == MULTIPART


def body_refusal(content_type: str | None, content_encoding: str | None) -> str | None:
    """Why a POST body with these headers is refused (415), or None."""
    encoding = (content_encoding or "").strip().lower()
    if encoding not in ("", "identity"):
        return (
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed (identity)."
        )
    kind, params = media_type(content_type)
    charset = params.get("charset")
    if kind != MULTIPART and charset is not None and charset.strip().lower() not in UTF8:
        return f"Request bodies are UTF-8: charset {charset!r} is not accepted."
    return None


def multipart_refusal(detail: str) -> tuple[int, str]:
    """The status and code of the multipart parser's refusal ``detail``: too many parts, or
    a part too large, is 413 PAYLOAD_TOO_LARGE; a malformed body 400 BAD_USER_INPUT."""
    if detail.startswith(("Too many", "Part exceeded")):
        return 413, "PAYLOAD_TOO_LARGE"
    return 400, "BAD_USER_INPUT"
