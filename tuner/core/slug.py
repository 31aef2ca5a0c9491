"""File names from user-chosen names: whatever a space's ``name`` or ``--study`` says, what is written
stays inside the folder it is written to."""

from __future__ import annotations

import re
import zlib

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_LEN = 80


def slug(name: str) -> str:
    """A file-name-safe form of ``name``: letters, digits, ``.``, ``_`` and ``-``, no leading dot, at
    most 80 characters; a name that had to change gets a short hash of the original, so two names
    never share a slug by accident.

    >>> slug("sglang-rtx5090")
    'sglang-rtx5090'
    >>> slug("../../escape"), slug("/tmp/x"), slug("a\\x00b")[:2], slug("")
    ('escape-eb794308', 'tmp-x-9a15d6a2', 'a-', 'study-00000000')
    """
    clean = _UNSAFE.sub("-", name).strip(".-")[:MAX_LEN].rstrip(".-")
    if clean == name and clean:
        return clean
    return f"{clean or 'study'}-{zlib.crc32(name.encode('utf-8', 'surrogatepass')):08x}"
