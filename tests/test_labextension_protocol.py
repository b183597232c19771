"""The sidebar's TypeScript copy of the protocol's vocabulary matches the package's enums."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest

from clarion_jupyter.core.protocol import CloseCode, EventType, RunStatus, StepStatus

PROTOCOL_TS = Path(__file__).parents[1] / "labextension" / "src" / "protocol.ts"


def typescript_enum(name: str) -> dict[str, str]:
    body = re.search(rf"export enum {name} \{{(.*?)\}}", PROTOCOL_TS.read_text(), re.S)
    assert body, f"enum {name} is missing from {PROTOCOL_TS.name}"
    return {key: value.strip("'") for key, value in re.findall(r"(\w+) = ('[^']*'|\d+)", body.group(1))}


@pytest.mark.parametrize("enum", [RunStatus, StepStatus, EventType, CloseCode], ids=lambda e: e.__name__)
def test_typescript_enum_has_the_same_members_and_values(enum: type[Enum]) -> None:
    assert typescript_enum(enum.__name__) == {member.name: str(member.value) for member in enum}
