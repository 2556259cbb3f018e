"""Logging: passwords in URLs are masked in every log line, whoever logs them."""

from __future__ import annotations

import logging
import re

_URL_WITH_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@]*:)(?P<password>[^\s@/]+)@")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL replaced by ``***``."""
    if "://" not in text:
        return text
    return _URL_WITH_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)


class MaskPasswords(logging.Filter):
    """A handler filter that masks URL passwords in the formatted message of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_passwords(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_password_masking(logger: logging.Logger | None = None) -> None:
    """Add :class:`MaskPasswords` to every handler of ``logger`` (default: the root logger), once."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, MaskPasswords) for f in handler.filters):
            handler.addFilter(MaskPasswords())
