"""ament_python package definition: colcon/ros2 installs it into a workspace, pip into a venv.

Everything a deployed robot needs at run time next to the code (launch file, robot profiles, the
Fast DDS profile, the models README) goes to share/lightwam_ros, where `ros2 launch` and
ament_index find it. Python dependencies are declared in package.xml (rosdep) and README.md (pip),
not here, so that a system ROS 2 installation is never overwritten by pip.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lightwam_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.xml"))),
        (f"share/{PACKAGE}/models", ["models/README.md"]),
        # the trained tiny demo model (2 MB): `lightwam demo` and `robot:=demo` run it
        (f"share/{PACKAGE}/models/demo_tiny_trained", sorted(glob("models/demo_tiny_trained/*"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="lightwam_ros maintainers",
    maintainer_email="maintainers@lightwam-ros.invalid",
    description="Light-WAM world action model policy node, bundle tools and rosbag replay for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            f"policy_node = {PACKAGE}.ros.node:main",
            f"lightwam = {PACKAGE}.cli:main",
        ],
    },
)
