"""lightwam_ros: the Light-WAM world action model on ROS 2 robots."""

__version__ = "0.1.0"
