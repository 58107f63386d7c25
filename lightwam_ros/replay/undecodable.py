"""Input messages of a bag that do not decode: counted per topic and skipped, never fatal.

Why: a recording from the field can hold a corrupt message (a length field that lies, a truncated
write) or bytes of another type on a topic (a mis-wired recorder). Neither may end a replay with
the decoder's traceback, and live replay must not publish such bytes to the node: its middleware
would fail to deserialize them and drop them unseen, so the report could not say which messages the
node never had, and offline and live would count differently. Each input message is therefore
decoded with the node's own decoder (rclpy's deserialize_message, Fast CDR) before it is used or
published; one that does not decode is skipped, counted for report.json (``undecodable``: topic ->
count), and the first one of each topic is logged -- one line per topic, not one per message.

The check costs a deserialization per message: offline replay needs the decoded message anyway;
live replay decodes what it publishes once more (a few ms for a 640x480 frame, while it waits for
the message's time).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from lightwam_ros.replay.bags import NS_PER_S, BagMessage

log = logging.getLogger(__name__)
SHOWN_ERROR_CHARS = 160  # of the decoder's message, in the one warning per topic


class InputDecoder:
    """Decodes input messages with rclpy by their bag type; None for one that does not decode."""

    def __init__(self, types: Mapping[str, Any], origin_ns: int = 0) -> None:
        from rclpy.serialization import deserialize_message

        self._deserialize = deserialize_message
        self._types = dict(types)  # message type ('pkg/msg/Name') -> rclpy class
        self._origin_ns = origin_ns  # the bag's start: record times in warnings are seconds after it
        self.undecodable: Counter[str] = Counter()

    def decode(self, msg: BagMessage, msgtype: str) -> Any | None:
        """The rclpy message, or None (counted, and logged the first time on its topic)."""
        try:
            return self._deserialize(msg.raw, self._types[msgtype])
        except Exception as exc:  # noqa: BLE001 - RMWError and what a decoded field raises: a corrupt message
            self._refuse(msg, msgtype, exc)
            return None

    def _refuse(self, msg: BagMessage, msgtype: str, exc: Exception) -> None:
        self.undecodable[msg.topic] += 1
        if self.undecodable[msg.topic] == 1:
            why = " ".join(str(exc).split()) or type(exc).__name__
            if len(why) > SHOWN_ERROR_CHARS:
                why = why[:SHOWN_ERROR_CHARS - 3] + "..."
            log.warning("%s: a message recorded %.3f s into the bag does not decode as %s (%s); this and "
                        "every other undecodable message on the topic is skipped and counted in "
                        "report.json 'undecodable'", msg.topic, (msg.log_ns - self._origin_ns) / NS_PER_S,
                        msgtype, why)

    def counts(self) -> dict[str, int]:
        """report.json's ``undecodable``: topic -> messages skipped (empty when every one decoded)."""
        return dict(sorted(self.undecodable.items()))
