"""Global names of clients and of their tasks, as both apps spell them.

A client is ``c<partition id>``; its k-th task (0-based position in its own schedule) is the leaf key
``c<partition id>/t<k>`` in the server's global tree, and ``t<k>`` inside the client's own learner. ``/`` never
occurs in a client id, so a key names its owner unambiguously.
"""

from __future__ import annotations

__all__ = ["client_id", "local_key", "task_key", "owner", "position", "is_valid_client_id", "owns"]


def client_id(partition_id: int) -> str:
    """``c<partition id>``."""
    return f"c{int(partition_id)}"


def local_key(pos: int) -> str:
    """The client learner's key of its ``pos``-th task: ``t<pos>``."""
    return f"t{int(pos)}"


def task_key(client: str, pos: int) -> str:
    """The global leaf key of ``client``'s ``pos``-th task: ``<client>/t<pos>``."""
    return f"{client}/{local_key(pos)}"


def is_valid_client_id(client: str) -> bool:
    """A non-empty id without ``/``."""
    return bool(client) and "/" not in client


def owns(client: str, key: str) -> bool:
    """Whether ``key`` is one of ``client``'s task keys (by its prefix)."""
    return key.startswith(f"{client}/")


def owner(key: str) -> str:
    """The client part of a global task key."""
    return key.split("/", 1)[0]


def position(key: str) -> int:
    """The task position of a global (``c1/t3``) or local (``t3``) key; ValueError when it has none."""
    tail = key.rsplit("/", 1)[-1]
    if not tail.startswith("t") or not tail[1:].isdigit():
        raise ValueError(f"{key!r} is not a task key (expected <client>/t<k> or t<k>)")
    return int(tail[1:])
