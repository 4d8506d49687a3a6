"""CloudStack's API error codes (ApiErrorCode) and the errors the HTTP API answers with."""

from __future__ import annotations

UNAUTHORIZED = 401
TOO_LARGE = 413
UNAVAILABLE = 503
PARAM_ERROR = 431
UNSUPPORTED_ACTION_ERROR = 432
INTERNAL_ERROR = 530

#: An operation already in flight on the VM. CloudStack answers its ConcurrentOperation
#: with 530, so clients that retry on 530 retry here too (ADR 0013).
CONFLICT = INTERNAL_ERROR


class ApiError(Exception):
    """
    A request answered with a CloudStack error: ``errorcode`` (also the HTTP status) and
    ``errortext``.
    """

    def __init__(self, code: int, text: str, cs_code: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cs_code = cs_code  # CloudStack's cserrorcode, when not the code's usual one


class Unauthenticated(ApiError):
    """
    A request that is unsigned, signed with an unknown key or a wrong signature, expired
    or replayed. ``reason`` is one of ``vmsnap.domain.api_refusal.REASONS``.
    """

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(UNAUTHORIZED, text)
        self.reason = reason
