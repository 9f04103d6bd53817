"""What the launcher tests pass to its commands (images, role, S3 places in moto's account), and a check
that an error message names only flags the command has. Import it after ``require_launcher_venv()``."""

from __future__ import annotations

import argparse
import re

from dogbreed.launcher import cli
from tests.launcher.conftest import ACCOUNT, REGION

IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-train:abc123"
SERVE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/dogbreed-serve:abc123"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/dogbreed-sagemaker"
DATA = "s3://dogbreed-data/dogImages"
OUT = "s3://dogbreed-out/jobs"
TRAIN_ARGS = ["--image", IMAGE, "--role", ROLE, "--train", f"{DATA}/train", "--valid", f"{DATA}/valid",
              "--test", f"{DATA}/test", "--output", OUT]


def options(command: str) -> set[str]:
    """The option strings ``command`` accepts."""
    [commands] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(commands.choices[command]._option_string_actions)


def assert_names_real_flags(command: str, message: str) -> None:
    """Every ``--flag`` an error message names is one that ``command`` has."""
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", message))
    assert named <= options(command), f"{message!r} names {sorted(named - options(command))}, not options of {command}"
