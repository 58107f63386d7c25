"""The QoS of every topic the policy node subscribes to or publishes, and of the other ends that
tests, benchmarks and live replay put next to it, in one place.

Why one module: a DDS publisher and subscription only talk when their QoS are compatible (a
best-effort publisher never reaches a reliable subscription; a volatile publisher never hands its
last message to a subscription that joins later), and the failure is silent -- no data, no error.
With the node's profiles and their counterparts side by side, a change to one side is made
knowing the other; test/ros/test_qos.py checks each pair with rclpy's own compatibility check.

Node side: camera_qos, joint_state_qos, instruction_qos (subscriptions); output_qos, canvas_qos,
diagnostics_qos (publishers). Other side: sensor_feed_qos and playback_qos (what a camera/joint
driver or `ros2 bag play` offers), instruction_qos (the same profile on both ends), clock_qos,
record_qos and rosout_qos (subscribers that must not miss what the node publishes).
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def _keep_last(depth: int, reliability: ReliabilityPolicy,
               durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=durability)


# --- what the node subscribes to -----------------------------------------------------------------
def camera_qos(queue_size: int) -> QoSProfile:
    """Camera images: best effort, keep last ``sync.queue_size``, volatile.

    Best effort: a lost frame is replaced by the next one within a frame period, while a reliable
    reader would have the lost fragments of a multi-megabyte image resent ahead of newer frames
    (the newest frame is the one inference wants). It also matches every camera driver, whether it
    publishes best effort (sensor-data QoS) or reliable. Depth = the FrameSync queue: the sync keeps
    at most that many frames per camera, so a deeper reader queue would only hold frames the sync
    drops as too old. Volatile: a frame from before the node subscribed is stale by definition.
    """
    return _keep_last(queue_size, ReliabilityPolicy.BEST_EFFORT)


def joint_state_qos() -> QoSProfile:
    """Joint states: best effort, keep last 5.

    Only the newest state is used (the node keeps the latest and checks its age), and states arrive
    at 100 Hz or more, so a lost one is superseded within milliseconds; five absorb a callback that
    runs late behind a camera frame. Best effort matches drivers publishing either way.
    """
    return _keep_last(5, ReliabilityPolicy.BEST_EFFORT)


def instruction_qos() -> QoSProfile:
    """The language instruction: reliable, keep last 1, transient local (latched), on both ends.

    An instruction is published once, not streamed: reliable, because a lost one is never repeated;
    transient local, so that a node started (or reconfigured) after the instruction was sent still
    receives it -- which works only when the publisher offers transient local as well, hence the
    same profile for the publishers in tests, benchmarks and live replay. Depth 1: only the current
    instruction matters, and a late joiner must not replay old ones.
    """
    return _keep_last(1, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)


# --- what the node publishes ---------------------------------------------------------------------
def output_qos() -> QoSProfile:
    """Commands and chunks (the output topic, ~/action_chunk): reliable, keep last 10, volatile.

    ros2_control's JointTrajectoryController and ForwardCommandController subscribe with the system
    default QoS, which is reliable: a best-effort publisher would not reach them at all. Ten
    absorbs a subscriber that is briefly slower than the control rate. Volatile: a command from
    before a controller subscribed is out of date and must not be executed.
    """
    return _keep_last(10, ReliabilityPolicy.RELIABLE)


def canvas_qos() -> QoSProfile:
    """The debug canvas (~/debug/canvas): reliable, keep last 1.

    A debugging view needs only the newest image, and each is large: queueing more would only delay
    it. Reliable (the default) so that image viewers and `ros2 bag record`, which subscribe reliable
    by default, match.
    """
    return _keep_last(1, ReliabilityPolicy.RELIABLE)


def diagnostics_qos() -> QoSProfile:
    """/diagnostics: reliable, keep last 10 (rclpy's default).

    diagnostic_aggregator subscribes with the system default QoS, which is reliable: a best-effort
    publisher would never reach it.
    """
    return _keep_last(10, ReliabilityPolicy.RELIABLE)


# --- the other ends: drivers, replay, recorders (tests, benchmarks, live replay) -----------------
def sensor_feed_qos() -> QoSProfile:
    """A camera driver's publisher: best effort, keep last 5 (rclpy's sensor-data QoS).

    What most camera drivers offer, so the stand-ins that play the robot feed the node the way a
    robot does; a best-effort publisher also checks that the node's subscriptions ask no more.
    """
    return _keep_last(5, ReliabilityPolicy.BEST_EFFORT)


def playback_qos() -> QoSProfile:
    """Live replay's input publishers (cameras, joint states): reliable, keep last 10, volatile.

    What `ros2 bag play` offers by default. A reliable publisher matches both best-effort and
    reliable subscriptions, so the node (best effort: delivery to it is best effort regardless) and
    any reliable subscriber, a recorder say, receive the replayed stream alike.
    """
    return _keep_last(10, ReliabilityPolicy.RELIABLE)


def clock_qos() -> QoSProfile:
    """A simulated /clock publisher: reliable, keep last 1.

    rclpy's time source subscribes best effort with depth 1 -- only the newest time matters -- and
    a reliable publisher matches it as well as any reliable subscriber.
    """
    return _keep_last(1, ReliabilityPolicy.RELIABLE)


def record_qos(depth: int = 100) -> QoSProfile:
    """A subscription that records what the node publishes: reliable, keep last ``depth``.

    Reliable, so that a recording counts what the node published, not what best effort delivered;
    deep, so that a burst (a chunk, a command and diagnostics in one tick) is not overwritten while
    the recorder's executor is busy with a large canvas image.
    """
    return _keep_last(depth, ReliabilityPolicy.RELIABLE)


def rosout_qos(depth: int = 100) -> QoSProfile:
    """A subscription to /rosout: reliable, keep last ``depth``, transient local.

    rcl publishes /rosout transient local, so a subscriber that asks the same receives the log lines
    a node wrote before the subscription matched -- a node's startup errors included.
    """
    return _keep_last(depth, ReliabilityPolicy.RELIABLE, DurabilityPolicy.TRANSIENT_LOCAL)
