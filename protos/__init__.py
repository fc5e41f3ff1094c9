"""TreeLoRA-Fed wire schema (DESIGN.md §3): protobuf control messages plus their validation and tensor codec.

- ``protos.treelora_fed_pb2``: the generated messages (package ``treelora.fed.v1``); regenerate with
  ``python -m protos.generate`` (``--check`` verifies the committed files).
- ``protos.wire``: parsing, validation and the tensor codec (numpy/torch only).

This package is framework-free: it never imports Flower.
"""

SCHEMA_VERSION = 1
"""The value of the ``version`` field of every top-level message this build writes and accepts."""

__all__ = ["SCHEMA_VERSION"]
