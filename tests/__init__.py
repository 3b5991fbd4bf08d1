"""Pantau's tests and benchmark scripts. Run from a checkout they use the checkout's own state
folder (var/: the built models) and the research data beside it (../shared/data), as
`./dev.sh` does, unless the caller set PANTAU_HOME or PANTAU_TEST_DATA; the command lines they
start inherit both."""

import os
from pathlib import Path

from pantau.agent.wire.paths import DATA_ENV, HOME_ENV

_REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault(HOME_ENV, str(_REPO / "var"))
os.environ.setdefault(DATA_ENV, str(_REPO.parent / "shared" / "data"))
