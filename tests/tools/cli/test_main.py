"""The console script's start-up: OpenMP threads sleep while they wait, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, sys; import audistill.tools.cli as cli; "
    "assert 'torch' not in sys.modules, 'the entry point must not load torch before main()'; "
    "sys.argv = ['audistill', '--help']; "
    "exec('try:\\n cli.main()\\nexcept SystemExit:\\n pass'); "
    "print(os.environ['OMP_WAIT_POLICY'])"
)


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_main_sets_the_wait_policy_before_torch_loads(given, seen):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == seen
