"""Start the Light-WAM policy node for one robot profile.

    ros2 launch lightwam_ros policy.launch.py robot:=aloha_3cam bundle:=/data/bundles/my_task
    ros2 launch lightwam_ros policy.launch.py --show-args      # every argument with its description

Thin on purpose: which profile, which overrides, namespace, remappings and environment are decided
by lightwam_ros.launch_config (tested without the launch system); this file only declares the
arguments and hands the resulting plan to launch_ros.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lightwam_ros.launch_config import LAUNCH_ARGUMENTS, describe, plan_from_arguments


def _start_node(context):
    plan = plan_from_arguments({a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS})
    params_file = plan.write_params_file()
    node = Node(
        package=plan.package,
        executable=plan.executable,
        name=plan.name,
        namespace=plan.namespace if plan.namespace != "/" else "",
        parameters=[str(params_file)],
        remappings=list(plan.remappings),
        arguments=plan.node_arguments,
        ros_arguments=["--log-level", plan.log_level],
        additional_env=plan.additional_env,
        output="screen",
        emulate_tty=True,
    )
    return [LogInfo(msg=describe(plan)), node]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                 for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_start_node)])
