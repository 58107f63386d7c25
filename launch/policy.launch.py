"""Start the Light-WAM policy node for one robot profile.

    ros2 launch lightwam_ros policy.launch.py robot:=aloha_3cam bundle:=/data/bundles/my_task
    ros2 launch lightwam_ros policy.launch.py --show-args      # every argument with its description

Thin on purpose: which profile, which overrides, namespace, remappings and environment are decided
by lightwam_ros.ros.launch_config (tested without the launch system); this file only declares the
arguments and hands the resulting plan to launch_ros.

Unknown arguments: the launch context holds every launch configuration of the whole launch -- an
including launch file's own arguments (`use_sim_time:=`, `world:=`, ...) as well as this file's --
and an included file is not told which of them its includer meant for it. So nothing unknown is an
error, and a warning (naming the known arguments) is logged only for names that look meant for this
file: one of its arguments but for case or '-'/'_' (`log-level`), a close misspelling (`bakend`,
`bundel`), or a node parameter given as an argument (`dry_run`); see launch_config.misplaced_arguments.
An including file's arguments with one of this file's names (`namespace`, `log_level`) do reach it,
as for any included launch file; pass different values with IncludeLaunchDescription's
launch_arguments.

Namespaces: a PushRosNamespace of an including file applies (a relative `namespace:=` goes under it),
and the resolved params file is keyed by that final name so the profile still applies.

Nothing is left behind: the resolved params file lives in a temporary directory that is removed
when the launch shuts down.
"""

import shutil
import tempfile
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnShutdown
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from lightwam_ros.ros.launch_config import (
    LAUNCH_ARGUMENTS,
    describe,
    misplaced_arguments_message,
    namespace_under,
    plan_from_arguments,
)


def _start_node(context):
    configurations = context.launch_configurations
    warning = misplaced_arguments_message(configurations)
    if warning:
        get_logger("lightwam_ros.launch").warning(warning)
    arguments = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    arguments["namespace"] = namespace_under(configurations.get("ros_namespace"), arguments["namespace"])
    plan = plan_from_arguments(arguments, environ=context.environment)

    params_dir = Path(tempfile.mkdtemp(prefix="lightwam_launch_"))
    try:
        params_file = plan.write_params_file(params_dir)
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
    except BaseException:
        shutil.rmtree(params_dir, ignore_errors=True)
        raise
    # The node reads the file once at start; it is removed when the launch shuts down (Ctrl-C, or
    # the node exiting and the launch going idle).
    remove_params = RegisterEventHandler(OnShutdown(
        on_shutdown=lambda event, context: shutil.rmtree(params_dir, ignore_errors=True)))
    return [remove_params, LogInfo(msg=describe(plan)), node]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                 for a in LAUNCH_ARGUMENTS]
    return LaunchDescription([*arguments, OpaqueFunction(function=_start_node)])
