"""A child for tests/test_child.py: it crashes in native code, as a bug in a runtime's library would."""

from __future__ import annotations

import ctypes
import sys


def main(argv: list[str]) -> int:
    ctypes.string_at(0)  # reads address 0: SIGSEGV
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
