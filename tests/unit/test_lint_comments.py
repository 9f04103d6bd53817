"""Every lint or type-check exemption in code/ says why it is there.

Ruff and mypy run with zero findings (``make lint``); what they are told to pass over must
carry its reason on the same line, after the codes: ``# noqa: BLE001 - why`` or
``# type: ignore[code] - why``. A bare ``# noqa`` (all codes) or ``# type: ignore`` (all
errors) is refused too: it would hide the next, unrelated finding on that line.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parents[2] / "code"
EXEMPTION = re.compile(r"#\s*(noqa|type:\s*ignore)\b(?P<rest>.*)")
WITH_REASON = {
    "noqa": re.compile(r"^:\s*[A-Z]+[0-9]+(\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S"),
    "type": re.compile(r"^\[[a-z-]+(\s*,\s*[a-z-]+)*\]\s+-\s+\S"),
}


def exemptions(path: Path) -> list[tuple[int, str, str]]:
    """(line, kind, text) of each noqa or type-ignore comment, read as comments, not strings."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.COMMENT and (match := EXEMPTION.search(token.string)):
            found.append((token.start[0], match.group(1).split(":")[0], match.group("rest")))
    return found


def test_every_exemption_names_its_codes_and_reason():
    bare = [
        f"{path.relative_to(CODE_DIR)}:{line}: {kind}{rest}"
        for path in sorted(CODE_DIR.rglob("*.py"))
        for line, kind, rest in exemptions(path)
        if not WITH_REASON[kind].match(rest)
    ]
    assert not bare, "exemptions without codes and a reason ('# noqa: CODE - why'):\n" + "\n".join(bare)


def test_the_check_sees_comments_and_refuses_bare_ones(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os  # noqa: F401 - re-exported\n"
        "x = 1  # noqa\n"
        "y = 2  # noqa: E501\n"
        "z = f()  # type: ignore[attr-defined] - the SDK's stub lacks it\n"
        "w = g()  # type: ignore\n"
        's = "# noqa in a string is not a comment"\n'
    )
    found = exemptions(sample)
    assert [line for line, _, _ in found] == [1, 2, 3, 4, 5]
    assert [line for line, kind, rest in found if WITH_REASON[kind].match(rest)] == [1, 4]
