"""Hypothesis keeps its files (the constants cache, and any database) out of the repository."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from hypothesis.configuration import set_hypothesis_home_dir

# Even with ``database=None`` Hypothesis writes caches under ``./.hypothesis``: point it at a
# temporary directory that goes away with the test process.
_home = tempfile.mkdtemp(prefix="liveproxy-fuzz-hypothesis-")
set_hypothesis_home_dir(_home)
atexit.register(shutil.rmtree, _home, ignore_errors=True)
