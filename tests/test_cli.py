import subprocess
import sys

from magicboost_core.cli import build_parser


def test_cli_help_lists_commands():
    parser = build_parser()
    out = parser.format_help()
    assert "demo" in out


def test_cli_module_runs():
    r = subprocess.run([sys.executable, "-m", "magicboost_core.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "magicboost" in r.stdout
