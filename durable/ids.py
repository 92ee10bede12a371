"""What an instance id may be: the one rule every entry point and every store applies."""

from __future__ import annotations

import re

MAX_ID_LENGTH = 1000  # characters; up to 4,000 bytes in UTF-8, which every store holds
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (category Cc)
_SHOWN = 60  # characters of a bad id that an error shows


def check_instance_id(instance_id: object) -> str:
    """Return ``instance_id`` if it is a valid id, else raise ``ValueError`` naming it and the
    rule it breaks: a non-empty string of at most ``MAX_ID_LENGTH`` characters, none of them a
    control character (they print as nothing, or break lines, in logs and on the command line).
    Cheap enough for every save: a length and one regular expression."""
    if not isinstance(instance_id, str):
        raise TypeError(f"an instance id must be a str, got {type(instance_id).__name__}: "
                        f"{_shown(repr(instance_id))}")
    if not instance_id or len(instance_id) > MAX_ID_LENGTH:
        if not instance_id:
            raise ValueError("invalid instance id '': an instance id must not be empty "
                             "(pass None for a new random id)")
        raise ValueError(f"invalid instance id {_shown(repr(instance_id))}: it has "
                         f"{len(instance_id)} characters, at most {MAX_ID_LENGTH} are allowed")
    control = _CONTROL.search(instance_id)
    if control is not None:
        raise ValueError(f"invalid instance id {_shown(repr(instance_id))}: it contains the "
                         f"control character {control[0]!r} at position {control.start()}")
    return instance_id


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
