# lightwam_ros developer entry points. From a fresh clone on a machine with only Python 3.11:
#   make demo    build the venv, then run the shipped trained tiny model on a synthetic bag through the node over DDS
#   make test    build the venvs and run every check below (what CI runs, via .ci/run)
#   make test-unit    the pure tests in well under a minute: no ROS, no model numerics or exports
#   make test-kilted  the whole pytest suite under ROS 2 Kilted (Fast DDS 3.x)
#   make test-jazzy   the tests marked `ros` (rclpy, messages, DDS) against ROS 2 Jazzy (Fast DDS 2.x)
#   make test-avx2    the tests marked `numeric` again with the CPU kernels capped at AVX2
#   make check-py310  the package, launch file and tests use nothing newer than Python 3.10
#   make lint    ruff (rules and their reasons: pyproject.toml)
# The venv is rebuilt only when this Makefile (the pins) or setup.py change (stamp file).
# On a robot with a system ROS 2 installation, do NOT use this venv: see README.md "Install".

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lightwam-deps.stamp

# rclpy and messages: ROS 2 Kilted wheels from PyPI (no ROS installation needed, nothing to source).
ROS_PKGS := \
	ros-rclpy==9.1.2 ros-rmw-fastrtps-cpp==9.3.3 ros-sensor-msgs==5.5.1 ros-std-msgs==5.5.1 \
	ros-trajectory-msgs==5.5.1 ros-geometry-msgs==5.5.1 ros-diagnostic-msgs==5.5.1 \
	ros-builtin-interfaces==2.3.0 ros-lifecycle-msgs==2.3.0 ros-std-srvs==5.5.1
# The same packages for ROS 2 Jazzy (rclpy 7.1, Fast DDS 2.14), in their own venv for `make test-jazzy`:
# Jazzy is what most robots run, and Fast DDS 2.x reads another profile variable (dds_profile.py).
ROS_JAZZY_PKGS := \
	ros-jazzy-rclpy==7.1.6 ros-jazzy-rmw-fastrtps-cpp==8.4.3 ros-jazzy-sensor-msgs==5.3.6 \
	ros-jazzy-std-msgs==5.3.6 ros-jazzy-trajectory-msgs==5.3.6 ros-jazzy-geometry-msgs==5.3.6 \
	ros-jazzy-diagnostic-msgs==5.3.6 ros-jazzy-builtin-interfaces==2.0.3 ros-jazzy-lifecycle-msgs==2.0.3 \
	ros-jazzy-std-srvs==5.3.6 ros-jazzy-rosgraph-msgs==2.0.3
# torch is pinned exactly: an unpinned torch pulls a multi-GB CUDA build. Never add onnxruntime-gpu
# next to onnxruntime (both own the `onnxruntime` module).
PY_PKGS := \
	setuptools==79.0.1 torch==2.13.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.31.1 \
	opencv-python-headless==5.0.0.93 numpy==2.4.6 rosbags==0.11.9 pyyaml==6.0.3 \
	safetensors==0.8.0 matplotlib==3.11.2 transformers==5.23.0 psutil==7.2.2 \
	pytest==9.2.0 pytest-timeout==2.4.0 hypothesis==6.170.15
# colcon from PyPI, only to check that the package builds as a ROS package (test_package_build.py);
# colcon-core needs setuptools<80, hence the setuptools pin above.
COLCON_PKGS := \
	colcon-core==0.21.3 colcon-ros==0.5.0 colcon-python-setup-py==0.2.9 \
	colcon-package-selection==0.2.10 colcon-recursive-crawl==0.2.3 colcon-parallel-executor==0.4.0 \
	colcon-package-information==0.4.1 colcon-library-path==0.2.1 colcon-output==0.2.15
# Python 3.10 is the oldest Python a supported ROS 2 distro runs (Humble); the venvs are 3.11, so
# `make check-py310` checks statically that no newer syntax or stdlib feature slipped in.
VERMIN_PKG := vermin==1.9.2
# The linter, pinned: a new ruff release adds checks, and `make lint` must not fail on its own.
LINT_PKGS := ruff==0.17.5

VENV_JAZZY ?= .venv-jazzy
PY_JAZZY := $(VENV_JAZZY)/bin/python
STAMP_JAZZY := $(VENV_JAZZY)/.lightwam-deps.stamp

# rclpy needs HOME (or ROS_LOG_DIR) for its logging; CI may run without one.
HOME ?= $(CURDIR)/$(VENV)/home
export HOME

PYTEST_FLAGS ?= -q --timeout=600

.PHONY: help venv venv-jazzy demo test lint test-unit test-kilted test-jazzy test-avx2 check-py310 clean-venv

help:
	@echo "make venv         create $(VENV) with pinned dependencies and the package (editable)"
	@echo "make demo         run the embedded demo (lightwam demo): outputs under out/demo/"
	@echo "make test         every check: lint, check-py310, test-kilted, test-avx2, test-jazzy (what CI runs)"
	@echo "make lint         ruff check (configuration in pyproject.toml)"
	@echo "make test-unit    run the pure tests only (no ROS, numerics, exports or model CLI runs; < 1 min)"
	@echo "make test-kilted  run the whole pytest suite (pytest $(PYTEST_FLAGS) test/)"
	@echo "make test-jazzy   run the tests marked ros under ROS 2 Jazzy (venv $(VENV_JAZZY))"
	@echo "make test-avx2    rerun the tests marked numeric with CPU kernels capped at AVX2"
	@echo "make check-py310  check that the code needs nothing newer than Python 3.10 (vermin)"

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): Makefile setup.py setup.cfg package.xml | $(PY)
	$(PY) -m pip install --upgrade-strategy only-if-needed $(ROS_PKGS) $(PY_PKGS) $(COLCON_PKGS) $(VERMIN_PKG) \
		$(LINT_PKGS)
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	$(PY) -c "import rclpy, torch, onnxruntime, rosbags, cv2, lightwam_ros; print('venv ok: torch', torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p "$(HOME)"
	$(VENV)/bin/lightwam demo

# Every step runs even after a failure (one run shows all of them); the target fails if any step
# failed. A pytest step that selects no test exits 5 and so counts as a failure: a marker that
# selects nothing means that check silently stopped checking.
TEST_STEPS := lint check-py310 test-kilted test-avx2 test-jazzy

test:
	@failed=""; for step in $(TEST_STEPS); do \
		start=$$SECONDS; echo "=== make $$step"; \
		if $(MAKE) --no-print-directory $$step; then echo "=== make $$step: ok ($$((SECONDS - start)) s)"; \
		else echo "=== make $$step: FAILED ($$((SECONDS - start)) s)"; failed="$$failed $$step"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "=== failed:$$failed"; exit 1; fi; echo "=== all checks passed"

test-kilted: $(STAMP)
	@mkdir -p "$(HOME)"
	$(PY) -m pytest $(PYTEST_FLAGS) test/

# The quick check while editing (about 30 s on 2 cores): the tests that touch no ROS (marker `ros`, set
# in test/conftest.py), are not slow and compare no CPU-kernel numerics, less the predict CLI tests
# (each runs the model end to end in a subprocess: 20 s more). Not a CI step: test-kilted runs them all.
test-unit: $(STAMP)
	@mkdir -p "$(HOME)"
	$(PY) -m pytest $(PYTEST_FLAGS) -m "not ros and not slow and not numeric" \
		--ignore=test/cli/test_predict_cli.py test/

venv-jazzy: $(STAMP_JAZZY)

# The `*` .gitignore inside keeps the venv out of git status (.gitignore lists only .venv/).
$(PY_JAZZY):
	$(PYTHON) -m venv $(VENV_JAZZY)
	echo '*' > $(VENV_JAZZY)/.gitignore

$(STAMP_JAZZY): Makefile setup.py setup.cfg package.xml | $(PY_JAZZY)
	$(PY_JAZZY) -m pip install --upgrade-strategy only-if-needed $(ROS_JAZZY_PKGS) $(PY_PKGS) $(COLCON_PKGS)
	$(PY_JAZZY) -m pip install --no-deps --no-build-isolation -e .
	$(PY_JAZZY) -c "import rclpy, torch, lightwam_ros; from lightwam_ros.ros.dds_profile import fastdds_major; \
		assert fastdds_major() == 2, 'Jazzy venv without Fast DDS 2.x'; print('jazzy venv ok')"
	touch $(STAMP_JAZZY)

# Only the tests that touch rclpy, messages or DDS (marker `ros`, set in test/conftest.py): the
# model and numeric tests do not depend on the ROS distro; tests marked slow (the end-to-end demo, the
# colcon build) are left out, the faster tests of the same ROS paths run.
test-jazzy: $(STAMP_JAZZY)
	@mkdir -p "$(HOME)"
	$(PY_JAZZY) -m pytest $(PYTEST_FLAGS) -m "ros and not slow" test/

# Same numerics with the CPU kernels capped at AVX2 (what older robot computers have): the default
# run uses AVX-512 where the CPU has it, and the tolerances must hold on both code paths. The ONNX
# export/Runtime tests are left out: the switches act on torch and oneDNN only (ONNX Runtime picks
# its own kernels), and the exports are the slowest tests of the suite.
test-avx2: $(STAMP)
	@mkdir -p "$(HOME)"
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest $(PYTEST_FLAGS) -m numeric \
		-k "not onnx and not export" test/

lint: $(STAMP)
	$(VENV)/bin/ruff check lightwam_ros launch test setup.py

check-py310: $(STAMP)
	$(VENV)/bin/vermin --no-tips --violations -t=3.10- --eval-annotations \
		lightwam_ros launch test setup.py

clean-venv:
	rm -rf $(VENV) $(VENV_JAZZY)
