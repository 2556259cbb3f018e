"""TLS for broker and coordination URLs: one set of query parameters, read once, handed to each
client library in its own terms (redis-py, kombu/py-amqp, pika).

A ``rediss://`` or ``amqps://`` URL connects over TLS, verifying the server's certificate and host
name against the system's CAs unless its query string says otherwise::

    ssl_cert_reqs       required (default) | optional | none (also CERT_REQUIRED, CERT_OPTIONAL, CERT_NONE)
    ssl_ca_certs        PEM file of the CAs to trust instead of the system's
    ssl_certfile        client certificate (PEM) for mutual TLS
    ssl_keyfile         the client certificate's private key (PEM), if not in ssl_certfile
    ssl_check_hostname  true (default) | false; false whenever ssl_cert_reqs is none

These are the names redis-py and kombu read from a URL; taskbridge takes them out of the URL and
passes each library the same options, so both engines and the coordination store behave alike.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TLS_SCHEMES = frozenset({"rediss", "amqps"})
PARAMETERS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")

Verify = Literal["required", "optional", "none"]
_VERIFY: dict[str, Verify] = {
    "required": "required",
    "cert_required": "required",
    "optional": "optional",
    "cert_optional": "optional",
    "none": "none",
    "cert_none": "none",
}
_MODES: dict[Verify, ssl.VerifyMode] = {
    "required": ssl.CERT_REQUIRED,
    "optional": ssl.CERT_OPTIONAL,
    "none": ssl.CERT_NONE,
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class TlsOptions:
    """How to connect over TLS: what to verify and which files to use."""

    verify: Verify = "required"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        """The ``ssl`` module's constant for :attr:`verify`."""
        return _MODES[self.verify]

    def context(self) -> ssl.SSLContext:
        """A client SSL context with these options."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.check_hostname = self.check_hostname
        context.verify_mode = self.verify_mode
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def redis_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments of redis-py (kombu's ``ssl`` options for Redis take the same)."""
        kwargs: dict[str, Any] = {"ssl_cert_reqs": self.verify, "ssl_check_hostname": self.check_hostname}
        for name, value in (
            ("ssl_ca_certs", self.ca_file),
            ("ssl_certfile", self.cert_file),
            ("ssl_keyfile", self.key_file),
        ):
            if value:
                kwargs[name] = value
        return kwargs

    def py_amqp_ssl(self, host: str | None) -> dict[str, Any]:
        """py-amqp's ``ssl`` connection options (kombu's and Celery's ``broker_use_ssl`` for AMQP);
        py-amqp checks the host name only when it is given ``server_hostname``."""
        sslopts: dict[str, Any] = {"cert_reqs": self.verify_mode}
        if self.check_hostname:
            sslopts["server_hostname"] = host
        for name, value in (("ca_certs", self.ca_file), ("certfile", self.cert_file), ("keyfile", self.key_file)):
            if value:
                sslopts[name] = value
        return sslopts


def split(url: str, setting: str | None = None) -> tuple[str, TlsOptions | None]:
    """``url`` without its TLS parameters, and the TLS options (None for a plain-text scheme).

    Raises ValueError naming the parameter (and ``setting``, when given) for an unknown ``ssl_*``
    parameter, a bad value, a file that does not exist, or TLS parameters on a scheme without TLS.
    """
    where = f"{setting}: " if setting else ""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = {name: value for name, value in query if name.startswith("ssl_")}
    rest = [(name, value) for name, value in query if not name.startswith("ssl_")]
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"{where}unknown TLS parameter {', '.join(unknown)}; use {', '.join(PARAMETERS)} (see docs/tls.md)"
        )
    if parts.scheme not in TLS_SCHEMES:
        if given:
            names = ", ".join(sorted(given))
            raise ValueError(f"{where}{names} given, but the URL is {parts.scheme}://; {_hint(parts.scheme)}")
        return url, None
    options = _options(given, where)
    return urlunsplit(parts._replace(query=urlencode(rest))), options


def _hint(scheme: str) -> str:
    if scheme == "sqs":
        return "SQS uses HTTPS: set TASKBRIDGE_SQS_ENDPOINT_URL=https://... and AWS_CA_BUNDLE for a private CA"
    secure = {"redis": "rediss", "amqp": "amqps", "pyamqp": "amqps"}.get(scheme)
    return f"use {secure}:// to connect over TLS" if secure else f"{scheme}:// takes no TLS parameters"


def check(url: str, setting: str | None = None) -> None:
    """Raise ValueError if ``url``'s TLS parameters are wrong (see :func:`split`)."""
    split(url, setting)


def _options(given: dict[str, str], where: str) -> TlsOptions:
    reqs = given.get("ssl_cert_reqs", "required")
    verify = _VERIFY.get(reqs.strip().lower())
    if verify is None:
        raise ValueError(f"{where}ssl_cert_reqs={reqs!r} is not one of required, optional, none")
    check_hostname = True
    if "ssl_check_hostname" in given:
        text = given["ssl_check_hostname"]
        flag = _BOOLEANS.get(text.strip().lower())
        if flag is None:
            raise ValueError(f"{where}ssl_check_hostname={text!r} must be true or false")
        check_hostname = flag
    files: dict[str, str | None] = {}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = given.get(name) or None
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{where}{name} file {path!r} does not exist or is not a file")
        files[name] = path
    if files["ssl_keyfile"] and not files["ssl_certfile"]:
        raise ValueError(f"{where}ssl_keyfile needs ssl_certfile (the client certificate it belongs to)")
    return TlsOptions(
        verify=verify,
        ca_file=files["ssl_ca_certs"],
        cert_file=files["ssl_certfile"],
        key_file=files["ssl_keyfile"],
        check_hostname=check_hostname and verify != "none",
    )
