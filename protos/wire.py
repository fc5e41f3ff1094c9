"""The TreeLoRA-Fed wire contract, in one import (DESIGN.md §3-§4, repository root).

``from protos.wire import X`` gives the whole public API; each name lives in the module that owns its concept:

===============================  ================================================================================
module                         holds
===============================  ================================================================================
``protos.treelora_fed_pb2``    the generated protobuf messages (``treelora_fed.proto``, package
                               ``treelora.fed.v1``; ``python -m protos.generate`` regenerates them)
:mod:`protos.errors`           :class:`ProtocolError`, :data:`ERROR_CODES`, :func:`error_reply`, :func:`make_error`
:mod:`protos.names`            the tensor names (``adapter.<l>.A`` ...; the table of names and who sends them is
                               in its docstring), ``WARM_HEAD_WEIGHT`` / ``WARM_HEAD_BIAS``
:mod:`protos.codec`            tensor ⟷ (numpy array, ``TensorInfo``): ``encode_tensor(s)``, ``decode_tensor``,
                               ``validate_tensors``; :data:`WIRE_DTYPES`, :data:`DEFAULT_MAX_TENSOR_BYTES`
:mod:`protos.messages`         bytes ⟷ messages: ``serialize``, ``parse_*``, the ``make_*`` builders;
                               :data:`DEFAULT_MAX_MESSAGE_BYTES`, :data:`DEFAULT_MAX_CHECKPOINT_BYTES`
:mod:`protos.validation`       the client's validator of an Assignment against its model and config:
                               ``validate_assignment``, ``expected_assignment_tensors``
:mod:`protos.report_validation` the server's validators of what clients send, against what it sent and knows:
                               ``validate_report`` (train), ``validate_probe`` (query), ``validate_done``,
                               ``ReportExpectation``, the magnitude bounds
:mod:`protos.sketch_spec`      ``LayerSketcher.spec()`` dict ⟷ ``SketchSpec``; :data:`SKETCH_SPEC_VERSION`,
                               :data:`SKETCH_KINDS`
:mod:`protos.envelope`         Flower ``RecordDict`` ⟷ (control bytes, arrays): ``pack``, ``pack_error``,
                               ``unpack``, ``content_nbytes`` — the only Flower-aware module, so it is *not*
                               re-exported here (importing this façade never imports Flower)
===============================  ================================================================================

The contract in short: control data travels as a protobuf message serialized to bytes; tensors travel next to
it as numpy arrays, each declared in the message's ``manifest``. A receiver parses (``parse_*``), then checks the
message and its arrays against the manifest *and* its own configuration (``validate_*``) before anything touches
the tree, the bandit or a model. Everything a peer sends is rejected with :class:`ProtocolError` (a
``ValueError`` with a machine-readable ``code``), never with another exception, and :func:`error_reply` turns it
into the ``ErrorReply`` sent back.
"""

from __future__ import annotations

from protos import SCHEMA_VERSION
from protos.codec import (
    DEFAULT_MAX_TENSOR_BYTES,
    WIRE_DTYPES,
    decode_tensor,
    encode_tensor,
    encode_tensors,
    validate_tensors,
)
from protos.errors import ERROR_CODES, ProtocolError, error_reply, make_error
from protos.messages import (
    DEFAULT_MAX_CHECKPOINT_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    make_assignment,
    make_checkpoint,
    make_eval,
    make_layer_assignment,
    make_leaf_record,
    make_pull,
    make_report,
    make_sketch_spec,
    make_tensor_info,
    parse_assignment,
    parse_checkpoint,
    parse_error,
    parse_eval,
    parse_report,
    serialize,
)
from protos.names import (
    PROTO_KINDS,
    WARM_HEAD_BIAS,
    WARM_HEAD_WEIGHT,
    adapter_name,
    cand_name,
    final_name,
    parse_proto_name,
    proto_name,
    share_name,
    sketch_name,
    warm_name,
)
from protos.report_validation import (
    MAX_ADAPTER_ABS,
    MAX_FEATURE_ABS,
    MAX_SKETCH_ABS,
    ReportExpectation,
    expected_report_tensors,
    is_done_report,
    validate_done,
    validate_probe,
    validate_report,
)
from protos.sketch_spec import SKETCH_KINDS, SKETCH_SPEC_VERSION, sketch_spec_from_dict, sketch_spec_to_dict
from protos.validation import expected_assignment_tensors, shared_parts, validate_assignment

__all__ = [
    "SCHEMA_VERSION",
    "SKETCH_SPEC_VERSION",
    "SKETCH_KINDS",
    "WIRE_DTYPES",
    "ERROR_CODES",
    "DEFAULT_MAX_TENSOR_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_CHECKPOINT_BYTES",
    "ProtocolError",
    "error_reply",
    "serialize",
    # tensor names
    "adapter_name",
    "sketch_name",
    "final_name",
    "cand_name",
    "share_name",
    "warm_name",
    "proto_name",
    "parse_proto_name",
    "PROTO_KINDS",
    "WARM_HEAD_WEIGHT",
    "WARM_HEAD_BIAS",
    # codec
    "encode_tensor",
    "decode_tensor",
    "encode_tensors",
    "validate_tensors",
    # parsing and validation
    "parse_assignment",
    "parse_report",
    "parse_eval",
    "parse_checkpoint",
    "parse_error",
    "validate_report",
    "validate_probe",
    "validate_done",
    "is_done_report",
    "ReportExpectation",
    "MAX_ADAPTER_ABS",
    "MAX_SKETCH_ABS",
    "MAX_FEATURE_ABS",
    "validate_assignment",
    "shared_parts",
    "expected_report_tensors",
    "expected_assignment_tensors",
    # builders
    "make_tensor_info",
    "make_sketch_spec",
    "make_layer_assignment",
    "make_assignment",
    "make_pull",
    "make_report",
    "make_eval",
    "make_leaf_record",
    "make_checkpoint",
    "make_error",
    # sketch spec bridge
    "sketch_spec_to_dict",
    "sketch_spec_from_dict",
]
