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


def test_engine_cli_does_not_know_the_nodes():
    """The workflow runner belongs to the node pack (``python -m nodes.runner``): the engine's CLI has no
    ``run`` command and importing it loads nothing of ``nodes/``."""
    assert "run" not in build_parser()._subparsers._group_actions[0].choices
    code = ("import sys, magicboost_core.cli as c; c.build_parser(); "
            "assert not any(m == 'nodes' or m.startswith('nodes.') for m in sys.modules), 'nodes loaded'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
