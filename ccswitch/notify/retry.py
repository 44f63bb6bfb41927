"""When a failed webhook POST is tried again: after a network error, a timeout, a 5xx, a 408
or a 429 (the hook's own `retry-after` honoured up to a cap), with doubling waits, a few
times.  Any other answer is final: a 4xx will not change by asking again."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ccswitch.routing.rate_limits import retry_after


def delivered(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def worth_retrying(status: int | None) -> bool:
    """None stands for no answer at all (network error, timeout)."""
    return status is None or status >= 500 or status in (408, 429)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4           # the first try and three more
    first_wait: float = 1.0     # seconds before the second try; doubled for each one after
    max_wait: float = 30.0      # no wait is longer, whatever a retry-after says

    def wait_before(self, attempt: int, status: int | None,
                    headers: list[tuple[str, str]] = ()) -> float | None:
        """Seconds to wait before attempt number `attempt + 1` after attempt `attempt` (1-based)
        answered `status`; None when there is nothing more to try."""
        if delivered(status) or not worth_retrying(status) or attempt >= self.attempts:
            return None
        wait = self.first_wait * 2 ** (attempt - 1)
        if status == 429 and headers:
            asked = retry_after(list(headers), time.time())   # seconds or an HTTP date
            if asked is not None:
                wait = max(wait, asked)
        return min(wait, self.max_wait)
