"""Run the CLI in-process through ``main()`` (the real error handling) and capture it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from usenetsync_cli.cli.app import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return Result(code, out, err)
