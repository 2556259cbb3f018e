"""Password masking for log lines, under its former module name.

The code lives in :mod:`taskbridge.observability.logging`; this module is the same API.
"""

from __future__ import annotations

from .observability.logging import MaskPasswords, install_password_masking, mask_passwords

__all__ = ["MaskPasswords", "install_password_masking", "mask_passwords"]
