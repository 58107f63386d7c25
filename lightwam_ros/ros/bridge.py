"""PolicyBridge: ROS messages in, PolicyController events; controller results out, ROS messages.

Why a separate object and not node methods: the node, offline replay and the simulated-clock tests
must turn messages into decisions and decisions into messages with the same code. The bridge holds
no rclpy entity: it is given the controller and four publishers (anything with ``publish(msg)``
and ``get_subscription_count()`` -- rclpy publishers in the node, bag or list recorders in replay
and tests), so every path from a message to what the robot receives runs here in all three.

The decisions are the controller's; the bridge only converts, and throttles two things that are
about messages, not control: bad-image errors (one per THROTTLE_S) and the debug canvas
(debug.canvas_rate_hz, and only when someone subscribes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import String

from lightwam_ros.config import apply_updates
from lightwam_ros.control.controller import (
    Command,
    FinishedChunk,
    ForwardCommand,
    Log,
    PolicyController,
    TickResult,
    TrajectoryCommand,
)
from lightwam_ros.ros.compressed import CompressedDecoder
from lightwam_ros.ros.decode_thread import DecodedFrame
from lightwam_ros.ros.images import ImageError, image_to_rgb, time_to_ns
from lightwam_ros.ros.outputs import action_chunk_msg, debug_canvas, diagnostic_array, forward_command, joint_trajectory

THROTTLE_S = 2.0  # min seconds between repeats of one error message
CANVAS_FRAME_ID = "lightwam_canvas"


@dataclass
class Publishers:
    """Where the bridge's messages go; ``output`` is None with output.mode none."""

    output: Any
    action_chunk: Any
    canvas: Any
    diagnostics: Any


def command_message(command: Command, joint_names: Any) -> Any:
    """A controller command as the message its executor takes."""
    if isinstance(command, ForwardCommand):
        return forward_command(command.values)
    assert isinstance(command, TrajectoryCommand)
    return joint_trajectory(joint_names, command.points, command.dt_ns, command.velocities, command.stamp_ns)


class PolicyBridge:
    """See the module doc. ``resolve_topic`` turns a configured topic into its full name (the
    node's resolve_topic_name); ``canvas_for(stamp)`` returns the tiled model input of the chunk
    observed at ``stamp`` (or None); ``decoder`` decodes compressed frames (default: all in full)."""

    def __init__(self, controller: PolicyController, publishers: Publishers, log: Log, *,
                 resolve_topic: Callable[[str], str], canvas_for: Callable[[int], np.ndarray | None],
                 decoder: CompressedDecoder | None = None) -> None:
        self.controller = controller
        self._decoder = decoder if decoder is not None else CompressedDecoder()
        self.publishers = publishers
        self._log = log
        self._resolve = resolve_topic
        self._canvas_for = canvas_for
        self._last_canvas_ns: int | None = None

    # -- inputs ------------------------------------------------------------------------------------

    def on_image(self, msg: Image | CompressedImage, camera: str, topic: str) -> None:
        """A raw or a compressed frame, converted here (the node decodes compressed frames on its
        DecodeThread and calls on_decoded instead; replay and tests come here)."""
        try:
            if isinstance(msg, CompressedImage):
                rgb = self._decoder.decode(msg, camera, self._resolve(topic))
            else:
                rgb = image_to_rgb(msg, self._resolve(topic))
        except ImageError as exc:
            self._bad_image(camera, exc)
            return
        self.controller.on_frame(camera, time_to_ns(msg.header.stamp), rgb)

    def on_decoded(self, frame: DecodedFrame) -> None:
        if frame.error is not None or frame.rgb is None:
            self._bad_image(frame.camera, frame.error or ImageError(f"compressed image on '{frame.topic}': no pixels"))
            return
        self.controller.on_frame(frame.camera, frame.stamp_ns, frame.rgb)

    def _bad_image(self, camera: str, exc: ImageError) -> None:
        """Counted (diagnostics lost_frames.<camera>.undecodable), logged once per THROTTLE_S; the
        camera has no frame this time and the sync and hold rules decide the rest."""
        self.controller.on_lost_frames(camera, "undecodable")
        self._log.error(f"{exc}; frame dropped", throttle_duration_sec=THROTTLE_S)

    def on_joint_state(self, msg: JointState) -> None:
        self.controller.on_joint_state(msg.name, msg.position, time_to_ns(msg.header.stamp))

    def on_instruction(self, msg: String) -> None:
        self.controller.on_instruction(msg.data)

    # -- outputs -----------------------------------------------------------------------------------

    def on_tick(self) -> TickResult:
        result = self.controller.tick()
        for finished in result.chunks:
            self._publish_chunk(finished)
        self.publish_command(result.command)
        return result

    def update_parameters(self, changes: dict[str, Any]) -> tuple[bool, str]:
        """Runtime parameter changes (validated as a whole against the bundle); the dry_run switch
        may publish one last hold. (ok, why not)."""
        controller = self.controller
        result = apply_updates(controller.config, changes, controller.bundle_info)
        if not result.ok:
            return False, result.reason
        self.publish_command(controller.reconfigure(result.config))
        return True, ""

    def stop(self) -> bool:
        """Deactivate the controller; True if its last hold was published."""
        command = self.controller.deactivate()
        self.publish_command(command)
        return command is not None and self.publishers.output is not None

    def publish_command(self, command: Command | None) -> None:
        if command is not None and self.publishers.output is not None:
            self.publishers.output.publish(command_message(command, self.controller.config.output.joint_names))

    def on_diagnostics(self) -> None:
        statuses, now = self.controller.diagnostics()
        self.publishers.diagnostics.publish(diagnostic_array(statuses, now))

    def _publish_chunk(self, finished: FinishedChunk) -> None:
        chunk = finished.chunk
        self.publishers.action_chunk.publish(action_chunk_msg(chunk, self.controller.config.output.joint_names))
        rate = self.controller.config.canvas_rate_hz
        now = finished.arrival_ns
        if rate <= 0 or (self._last_canvas_ns is not None and now - self._last_canvas_ns < 1e9 / rate):
            return
        if self.publishers.canvas.get_subscription_count() == 0:
            return
        canvas = self._canvas_for(chunk.stamp_ns)  # with overlapping requests: this chunk's own input
        if canvas is not None:
            self.publishers.canvas.publish(debug_canvas(canvas, chunk.stamp_ns, CANVAS_FRAME_ID))
            self._last_canvas_ns = now
