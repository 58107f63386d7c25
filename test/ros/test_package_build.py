"""The package builds as a ROS 2 package with colcon and installs what `ros2 launch`/`ros2 run` need.

A robot user runs `colcon build` in a workspace, then `ros2 launch lightwam_ros policy.launch.py`
and `ros2 run lightwam_ros policy_node`: those look for the launch file and profiles under
share/lightwam_ros (found through the ament index) and for executables under lib/lightwam_ros.
A wrong data_files entry or setup.cfg only shows up there, so this test builds a copy of the
package with colcon (from PyPI, installed by `make venv`) into a temp workspace and checks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lightwam_ros.ros.launch_config import DDS_PROFILES

pytestmark = pytest.mark.slow  # a colcon build: the same on every distro

REPO_ROOT = Path(__file__).resolve().parents[2]
PKG = "lightwam_ros"
_SKIP_TOP = {".git", ".venv", "build", "install", "log", "out", ".pytest_cache", ".home"}


def _colcon() -> str | None:
    beside_python = Path(sys.executable).parent / "colcon"
    return str(beside_python) if beside_python.exists() else shutil.which("colcon")


def _copy_package(dst: Path) -> None:
    """Copy the source tree without venvs, build outputs or model bundles (models/README.md stays)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        skipped = {n for n in names if n in ("__pycache__",) or n.endswith(".egg-info")}
        if here == REPO_ROOT:
            skipped |= {n for n in names if n in _SKIP_TOP}
        if here == REPO_ROOT / "models":
            skipped |= {n for n in names if (here / n).is_dir()}
        return skipped

    shutil.copytree(REPO_ROOT, dst, ignore=ignore, symlinks=True)


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    colcon = _colcon()
    if colcon is None:
        pytest.skip("colcon is not installed in this environment (`make venv` installs it from PyPI)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    _copy_package(ws / "src" / PKG)
    env = dict(os.environ, COLCON_HOME=str(ws / ".colcon"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("AMENT_PREFIX_PATH", None)
    env.pop("COLCON_PREFIX_PATH", None)
    proc = subprocess.run(
        [colcon, "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
         "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
         "--event-handlers", "console_direct-"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"colcon build failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"Finished <<< {PKG}" in proc.stdout, proc.stdout
    return ws / "install" / PKG


def test_share_dir_holds_launch_profiles_and_manifest(colcon_install: Path) -> None:
    share = colcon_install / "share" / PKG
    assert (share / "package.xml").read_text() == (REPO_ROOT / "package.xml").read_text()
    assert (share / "launch" / "policy.launch.py").is_file()
    for profile in ("aloha_3cam", "libero_franka", "demo"):
        assert (share / "config" / f"{profile}.yaml").is_file(), profile
    for dds_profile in DDS_PROFILES.values():  # what dds_profile:= loads
        assert (share / "config" / dds_profile).is_file(), dds_profile
    assert (share / "models" / "README.md").is_file()
    assert (colcon_install / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()


def test_console_scripts_installed_where_ros2_run_looks(colcon_install: Path) -> None:
    for script in ("policy_node", "lightwam"):
        path = colcon_install / "lib" / PKG / script
        assert path.is_file(), f"{path} missing (setup.cfg install_scripts)"
        assert os.access(path, os.X_OK), f"{path} is not executable"


def test_installed_package_runs_and_finds_its_share_dir(colcon_install: Path) -> None:
    site = next(colcon_install.glob("lib/python3*/site-packages"))
    assert (site / PKG / "ros" / "node.py").is_file()  # the subpackages are installed too
    env = dict(os.environ, PYTHONPATH=str(site), AMENT_PREFIX_PATH=str(colcon_install))
    (colcon_install / "share" / PKG / "models" / "my_bundle").mkdir(exist_ok=True)  # a bundle copied there
    probe = ("import lightwam_ros, lightwam_ros.ros.launch_config as lc, lightwam_ros.config as c; "
             "print(lightwam_ros.__file__); print(lc.package_share_dir()); "
             "print(lc.available_profiles(lc.package_share_dir())); "
             "print(c.resolve_bundle_path('my_bundle'))")
    # cwd outside the checkout: `python -c` puts the cwd first on sys.path
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         cwd=colcon_install)
    assert out.returncode == 0, out.stderr
    module_file, share_dir, profiles, bundle = out.stdout.strip().splitlines()
    assert Path(bundle) == colcon_install / "share" / PKG / "models" / "my_bundle"  # `bundle: my_bundle` resolves
    assert Path(module_file).is_relative_to(site)
    assert Path(share_dir) == colcon_install / "share" / PKG
    assert profiles == str(["aloha_3cam", "demo", "libero_franka"])
    help_out = subprocess.run([str(colcon_install / "lib" / PKG / "lightwam"), "--help"], env=env,
                              capture_output=True, text=True, timeout=120, cwd=colcon_install)
    assert help_out.returncode == 0, help_out.stderr
    assert "demo" in help_out.stdout and "replay" in help_out.stdout


def test_package_xml_is_valid_format_3_with_the_runtime_dependencies() -> None:
    catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg comes with colcon-ros (`make venv`)")
    pkg = catkin_pkg.parse_package(str(REPO_ROOT / "package.xml"))  # validates against format 3 rules
    assert pkg.package_format == 3 and pkg.name == PKG
    assert pkg.get_build_type() == "ament_python"
    exec_deps = {d.name for d in pkg.exec_depends}
    assert {"rclpy", "sensor_msgs", "std_msgs", "trajectory_msgs", "diagnostic_msgs", "std_srvs", "lifecycle_msgs",
            "builtin_interfaces", "python3-numpy", "python3-opencv", "python3-yaml"} <= exec_deps
    assert "python3-pytest" in {d.name for d in pkg.test_depends}
    setup_py = (REPO_ROOT / "setup.py").read_text()  # setup.py must agree on the version
    assert f'version="{pkg.version}"' in setup_py
