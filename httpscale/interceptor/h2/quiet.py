"""h2's H2Connection without its per-frame trace formatting.

h2 4.x's `_receive_frame` begins with `logger.trace("Received frame: %s", repr(frame))`: the
repr (hyperframe's sorts the frame's flags) is built for every frame received even when
nothing logs, ~4% of an h2c request's CPU. `QuietH2Connection._receive_frame` is h2's own less
that line; the error handling is h2's, unchanged. Used by the server connection (server.py)
and the HTTP/2 upstream connections (upconn.py).
"""

from __future__ import annotations

from typing import Any

from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from hyperframe.frame import RstStreamFrame

__all__ = ["QuietH2Connection"]


class QuietH2Connection(H2Connection):
    def _receive_frame(self, frame: Any) -> Any:
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events
