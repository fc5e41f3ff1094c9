"""TreeLoRA-Fed wire contract (DESIGN.md §3-§4, repository root): protobuf control messages, the tensors that
travel next to them, and the checks a receiver applies to both.

- ``protos.wire``: the façade; ``from protos.wire import X`` gives the whole public API and its docstring is the
  index of the contract (which module holds what).
- ``protos.errors``, ``protos.names``, ``protos.codec``, ``protos.messages``, ``protos.validation``,
  ``protos.sketch_spec``: one concept each (error codes, tensor names, tensor codec, bytes ⟷ messages,
  receiver-side validators, sketch-spec bridge).
- ``protos.treelora_fed_pb2``: the generated messages (package ``treelora.fed.v1``); regenerate with
  ``python -m protos.generate`` (``--check`` verifies the committed files).
- ``protos.envelope``: the Flower ``RecordDict`` envelope (pack / unpack) — **the one Flower-aware module**.

Every other module of this package is framework-free: no Flower (numpy, torch and protobuf only), and nothing
of this package imports ``treelora``, ``client`` or ``server`` (tests/protos/test_layering.py checks both).
"""

SCHEMA_VERSION = 1
"""The value of the ``version`` field of every top-level message this build writes and accepts."""

__all__ = ["SCHEMA_VERSION"]
