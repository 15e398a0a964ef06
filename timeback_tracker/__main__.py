"""``python -m timeback_tracker``: the ``timeback-tracker`` command line."""

from timeback_tracker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
