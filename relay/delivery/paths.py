"""Names from mail (domains, local parts, queue ids) as parts of file paths on this node."""

from __future__ import annotations


def path_component(text: str) -> str:
    """A domain or local part as one directory name: no '/', '\\' or NUL (or other control
    character), no '..', not hidden."""
    cleaned = "".join("_" if ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    cleaned = cleaned.replace("..", "__")
    if not cleaned or cleaned.startswith("."):
        cleaned = "_" + cleaned
    return cleaned
