"""One log line per outage, not one per partition loop that meets it.

The worker runs a loop per partition stream, and every loop meets the same
Redis outage; logging each failure would repeat one event sixteen times (and
again on every retry). An `OutageLog` warns when the first loop meets the
outage and says once when a loop succeeds again; the failures in between go
to debug.
"""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._down = False

    def failed(self, error: BaseException, **context: object) -> None:
        extra = {**context, "error": repr(error)}
        if self._down:
            self._logger.debug(f"{self._what} still unavailable", extra=extra)
            return
        self._down = True
        self._logger.warning(f"{self._what} unavailable, retrying", extra=extra)

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            self._logger.info(f"{self._what} available again")
