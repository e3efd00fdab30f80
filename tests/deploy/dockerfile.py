"""A small reader of deploy/Dockerfile: instructions per build stage, continuation lines joined."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tests.deploy.manifests import DEPLOY

DOCKERFILE = DEPLOY / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction; ValueError if it is in shell form."""
        parsed = json.loads(self.arguments)
        if not isinstance(parsed, list) or not all(isinstance(part, str) for part in parsed):
            raise ValueError(f"{self.keyword} is not in exec form: {self.arguments}")
        return parsed


def stages() -> list[list[Instruction]]:
    """The Dockerfile's stages in order, each starting with its FROM; the last one is the image."""
    result: list[list[Instruction]] = []
    for instruction in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def env_values(stage: list[Instruction]) -> dict[str, str]:
    """The stage's ENV settings, written as `ENV NAME=value NAME2="value"` (one or many lines)."""
    values: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword != "ENV":
            continue
        for pair in instruction.arguments.split():
            name, _, value = pair.partition("=")
            values[name] = value.strip('"')
    return values


def _instructions(text: str) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def image_uid() -> int:
    """The numeric user the image runs as (its last USER, `uid[:gid]`)."""
    users = [i.arguments for i in stages()[-1] if i.keyword == "USER"]
    if not users:
        raise ValueError("the image sets no USER, so it runs as root")
    return int(users[-1].split(":")[0])
