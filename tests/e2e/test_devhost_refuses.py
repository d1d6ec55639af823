"""The devhost refuses a data directory it cannot write: one line on stderr, no traceback, a non-zero exit.

File modes do not bind root, and tests often run as root: then the devhost runs without the
capabilities that let root ignore them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), as an ordinary user
would. Its files stay readable: root still owns them.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.sqlite_store import SqliteStore
from emulator.server import free_port
from tests.conftest import ROOT

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _bound_by_file_modes() -> None:
    """Drop, for the child about to start, what lets root write where file modes say no."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _devhost(data: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VENDING_DATA_DIR": str(data),
        "PORT": str(free_port()),
        "VENDING_EMULATOR_PORT": str(free_port()),
    }
    try:
        return subprocess.run(
            [sys.executable, "-m", "devhost"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            preexec_fn=_bound_by_file_modes if os.geteuid() == 0 else None,
        )
    except subprocess.TimeoutExpired as running:
        raise AssertionError(f"the devhost started on {data} instead of refusing it:\n{running.stderr!r}") from None


def _one_clear_line(result: subprocess.CompletedProcess[str], data: Path) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    assert line.startswith(f"error: cannot start: the data directory {data} is not writable"), line
    assert "set VENDING_DATA_DIR to another folder" in line
    return line


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)  # let the temporary folder be removed


def test_the_devhost_refuses_a_read_only_data_directory(data: Path) -> None:
    data.chmod(0o555)
    line = _one_clear_line(_devhost(data), data)
    assert "Permission denied" in line


def test_the_devhost_refuses_a_data_directory_whose_store_file_is_read_only(data: Path) -> None:
    SqliteStore(data / "state.db")  # the state of an earlier run, with its tables
    (data / "state.db").chmod(0o444)
    line = _one_clear_line(_devhost(data), data)
    assert f"({data / 'state.db'})" in line
