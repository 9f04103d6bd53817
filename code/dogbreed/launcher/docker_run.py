"""``docker run`` of the training image on this machine (a local search, a report), as this user."""

from __future__ import annotations

import os


def as_this_user() -> list[str]:
    """``docker run --rm`` as this user, so what the container writes is the user's; such a user has no
    home in the image, so HOME and matplotlib's cache point at /tmp."""
    return [
        "docker",
        "run",
        "--rm",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        "MPLCONFIGDIR=/tmp",
        "-e",
        "HOME=/tmp",
    ]
