#!/usr/bin/env bash
# Benchmark-only environment with supervision (ByteTrack + LineZone + PolygonZone) for the
# side-by-side in bench_counting.py. Never installed into the project's .venv, never a
# dependency of the agent.
set -euo pipefail
VENV="${BENCH_VENV:-/tmp/bench-venv}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "supervision>=0.25" trackers numpy scipy opencv-python-headless motmetrics
"$VENV/bin/python" -c "import supervision; print('supervision', supervision.__version__)"
