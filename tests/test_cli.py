"""The console script: help, version, and the gradcheck table's exit codes."""

import subprocess
import sys

import numpy as np
import pytest

import refimpl
from catneuron import __version__
from catneuron.cli import COMMANDS, main


def test_version_and_help_list_every_command():
    out = subprocess.run([sys.executable, "-m", "catneuron", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out
    ver = subprocess.run([sys.executable, "-m", "catneuron", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert ver.strip() == f"catneuron {__version__}" and __version__ != "0+unknown"


def test_gradcheck_passes_and_prints_every_sublayer(capsys):
    assert main(["gradcheck", "--cases", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for name, entry in refimpl.SUBLAYERS.items():
        assert name in out
    assert "FAIL" not in out and f"{len(refimpl.SUBLAYERS)} of {len(refimpl.SUBLAYERS)}" in out


def test_gradcheck_exits_nonzero_on_a_wrong_backward(monkeypatch, capsys):
    entry = refimpl.SUBLAYERS["l2pool"]

    def wrong_backward(dy, cache):
        dx, grads = entry.backward(dy, cache)
        return dx + 1e-3 * np.abs(dx).max(), grads

    broken = type(entry)(entry.name, entry.equation, entry.forward, wrong_backward, entry.case)
    monkeypatch.setitem(refimpl.SUBLAYERS, "l2pool", broken)
    assert main(["gradcheck", "--cases", "1", "--only", "l2pool"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "--only", "conv"], "unknown sublayer"),
    (["gradcheck", "--cases", "0"], "--cases must be >= 1"),
])
def test_bad_arguments_are_errors_not_tracebacks(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
