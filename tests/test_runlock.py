"""The run folder lock: a second writer is refused naming the holder; a dead holder holds nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.measure.runlock import LOCK_FILE, RunFolderLocked, lock_run_folder, unlock_run_folder

HOLD = """
import sys, time
from pathlib import Path
from bench.measure.runlock import lock_run_folder
lock_run_folder(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderLocked, match=rf"another bench process \(PID {holder.pid}\)") as info:
            lock_run_folder(tmp_path)
        assert info.value.exit_code == 2
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs; the kernel drops the lock
        holder.wait()
    lock_run_folder(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock_run_folder(tmp_path)  # this process again: not a second writer
    finally:
        unlock_run_folder(tmp_path)
