"""``python -m liveproxy`` is ``liveproxy``."""

from liveproxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
