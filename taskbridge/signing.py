"""Signed envelopes: an HMAC-SHA256 over the canonical envelope, set by producers, checked by workers.

With ``TASKBRIDGE_SIGNING_KEY`` set, every envelope published through the core (enqueue, retry,
deferral, delay hop, chain step, dead-letter record) carries ``headers["signature"]``, and a worker
dead-letters a message whose signature is missing or matches none of its accepted keys before it
looks at anything else in it.

The canonical form is the JSON array ``[v, id, job, queue, attempt, enqueued_at, expires_at,
not_before, args, kwargs, chain, headers]`` (objects inside it with sorted keys, no spaces, ASCII
only, timestamps as floats, the signature header left out): it depends only on the envelope's
values, never on the order or spacing a producer wrote them in, and it covers every field.

The signature travels in ``headers`` rather than in a new envelope field so that a worker without
signing, of this version or an older one, reads a signed envelope as usual (the codec refuses
unknown fields).
"""

from __future__ import annotations

import copy
import hmac
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .envelope import Envelope

if TYPE_CHECKING:
    from .config import Settings

SIGNATURE_HEADER = "signature"
"""The envelope header that carries the signature, ``hmac-sha256:<64 hex digits>``."""
SCHEME = "hmac-sha256:"

_DIGEST = "sha256"

MISSING = "missing signature"
MISMATCH = "signature does not match any accepted key"

_SIGNATURE_FIELD = len(json.dumps({SIGNATURE_HEADER: SCHEME + "0" * 64}, separators=(",", ":")))
"""Bytes the signature header adds to an envelope's JSON (one more for the comma before it)."""
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _encoder() -> Callable[[Any], str]:
    """``_CANONICAL.encode`` without the setup it repeats on every call (half its time for an
    envelope): the same C encoder, made once. Falls back to ``encode`` where there is none."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _CANONICAL.encode
    chunks = make(None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, False)
    return lambda value: "".join(chunks(value, 0))


_encode = _encoder()


def canonical(envelope: Envelope) -> bytes:
    """The bytes the signature covers: every field of ``envelope`` except the signature itself, as a
    JSON array in a fixed order (objects inside with sorted keys, no spaces, ASCII only)."""
    fields = vars(envelope)
    headers = fields["headers"]
    if SIGNATURE_HEADER in headers:
        headers = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}
    return _encode(
        [
            fields["v"],
            fields["id"],
            fields["job"],
            fields["queue"],
            fields["attempt"],
            _timestamp(fields["enqueued_at"]),
            _timestamp(fields["expires_at"]),
            _timestamp(fields["not_before"]),
            fields["args"],
            fields["kwargs"],
            fields["chain"],
            headers,
        ]
    ).encode("ascii")


def _timestamp(value: Any) -> Any:
    # The codec reads a whole-number timestamp as a float: sign what the worker will see.
    return float(value) if type(value) is int else value


class Signer:
    """Signs envelopes with one key and verifies them against that key and older ones still accepted.

    Keys are kept as bytes (a ``str`` key is its UTF-8 bytes) and never shown in ``repr``.
    """

    def __init__(self, key: str | bytes, accepted: Sequence[str | bytes] = ()) -> None:
        first = _as_bytes(key)
        keys = [first, *(k for k in map(_as_bytes, accepted) if k != first)]
        # Keyed once; each message costs a copy of the keyed state, not the key schedule again.
        self._macs = [hmac.new(k, digestmod=_DIGEST) for k in keys]

    def __repr__(self) -> str:
        return f"Signer(keys={len(self._macs)})"

    def signature(self, envelope: Envelope) -> str:
        """The signature of ``envelope`` with the signing key."""
        return SCHEME + _mac(self._macs[0], canonical(envelope)).hex()

    def sign(self, envelope: Envelope) -> Envelope:
        """A copy of ``envelope`` carrying its signature (any previous signature replaced)."""
        signed = copy.copy(envelope)  # dataclasses.replace costs twice the signature itself
        object.__setattr__(signed, "headers", {**envelope.headers, SIGNATURE_HEADER: self.signature(envelope)})
        return signed

    def sign_all(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Each of ``envelopes``, signed."""
        return [self.sign(envelope) for envelope in envelopes]

    def verify(self, envelope: Envelope) -> str | None:
        """None if ``envelope`` is signed with an accepted key, else why not (:data:`MISSING` or
        :data:`MISMATCH`)."""
        given = envelope.headers.get(SIGNATURE_HEADER)
        if given is None:
            return MISSING
        if not isinstance(given, str) or not given.startswith(SCHEME):
            return MISMATCH
        try:
            claimed = bytes.fromhex(given[len(SCHEME) :])
        except ValueError:
            return MISMATCH
        body = canonical(envelope)
        for keyed in self._macs:
            if hmac.compare_digest(_mac(keyed, body), claimed):
                return None
        return MISMATCH


def _mac(keyed: hmac.HMAC, body: bytes) -> bytes:
    mac = keyed.copy()
    mac.update(body)
    return mac.digest()


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


def signer_for(settings: Settings) -> Signer | None:
    """The signer the settings ask for, or None when ``signing_key`` is not set."""
    if settings.signing_key is None:
        return None
    accepted = tuple(k.get_secret_value() for k in settings.signing_keys_accepted)
    return _signer(settings.signing_key.get_secret_value(), accepted)


@lru_cache(maxsize=8)
def _signer(key: str, accepted: tuple[str, ...]) -> Signer:
    return Signer(key, accepted)


def signed(envelopes: Sequence[Envelope], settings: Settings) -> Sequence[Envelope]:
    """``envelopes`` as they must be published under ``settings``: signed when a key is set."""
    signer = signer_for(settings)
    return envelopes if signer is None else signer.sign_all(envelopes)


def overhead(settings: Settings) -> int:
    """Bytes a signature adds to an envelope on the wire under ``settings`` (0 without a key)."""
    return 0 if settings.signing_key is None else _SIGNATURE_FIELD
