"""Which environment variable loads a Fast DDS XML profile, by the Fast DDS version in use.

Fast DDS 3.x (ROS 2 Kilted and newer) reads ``FASTDDS_DEFAULT_PROFILES_FILE`` and still accepts the
old name with a deprecation warning per participant; Fast DDS 2.x (Humble, Iron, Jazzy) reads only
``FASTRTPS_DEFAULT_PROFILES_FILE`` and silently ignores the new name -- a profile set under the wrong
name does nothing, and camera-size images then fragment and get lost. So the name is chosen from
the library that rmw_fastrtps will load (``libfastdds`` is 3.x, ``libfastrtps`` is 2.x), falling back
on ``ROS_DISTRO`` and then on the 3.x name.

API
- ``fastdds_major(environ=None) -> int | None`` -- 3, 2, or None when neither can be told.
- ``profile_variable(environ=None) -> str`` -- the variable this Fast DDS reads.
- ``profile_env(path, environ=None) -> dict[str, str]`` -- ``{variable: path}``, or ``{}`` when the
  user already set either variable (their profile wins).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

NEW_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"  # Fast DDS >= 3
OLD_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"  # Fast DDS 2.x (also accepted, deprecated, by 3.x)
FAST_DDS_2_DISTROS = frozenset({"foxy", "galactic", "humble", "iron", "jazzy"})


def _library_dirs(environ: Mapping[str, str]) -> Iterable[Path]:
    for var in ("LD_LIBRARY_PATH",):
        for part in environ.get(var, "").split(os.pathsep):
            if part:
                yield Path(part)
    for part in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if part:
            yield Path(part) / "lib"
    yield Path(sys.prefix) / "lib"  # the PyPI ROS wheels put their libraries here


def _major_from_libraries(environ: Mapping[str, str]) -> int | None:
    seen: set[Path] = set()
    for d in _library_dirs(environ):
        if d in seen:
            continue
        seen.add(d)
        try:
            names = [p.name for p in d.iterdir()]
        except OSError:
            continue
        if any(n.startswith("libfastdds.so") for n in names):
            return 3
        if any(n.startswith("libfastrtps.so") for n in names):
            return 2
    return None


def fastdds_major(environ: Mapping[str, str] | None = None) -> int | None:
    env = os.environ if environ is None else environ
    major = _major_from_libraries(env)
    if major is not None:
        return major
    distro = env.get("ROS_DISTRO", "").strip().lower()
    if distro:
        return 2 if distro in FAST_DDS_2_DISTROS else 3
    return None


def profile_variable(environ: Mapping[str, str] | None = None) -> str:
    return OLD_VARIABLE if fastdds_major(environ) == 2 else NEW_VARIABLE


def profile_env(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    if env.get(NEW_VARIABLE) or env.get(OLD_VARIABLE):
        return {}
    return {profile_variable(env): str(path)}
