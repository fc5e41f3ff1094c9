from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorInfo(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class SketchSpec(_message.Message):
    __slots__ = ("kind", "out_dim", "seed", "layer_dims")
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUT_DIM_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LAYER_DIMS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    out_dim: int
    seed: int
    layer_dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, kind: _Optional[str] = ..., out_dim: _Optional[int] = ..., seed: _Optional[int] = ..., layer_dims: _Optional[_Iterable[int]] = ...) -> None: ...

class LayerAssignment(_message.Message):
    __slots__ = ("layer", "candidates", "group_node", "group_size", "shared", "share_parts")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    GROUP_NODE_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SHARE_PARTS_FIELD_NUMBER: _ClassVar[int]
    layer: int
    candidates: _containers.RepeatedScalarFieldContainer[str]
    group_node: str
    group_size: int
    shared: bool
    share_parts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, layer: _Optional[int] = ..., candidates: _Optional[_Iterable[str]] = ..., group_node: _Optional[str] = ..., group_size: _Optional[int] = ..., shared: _Optional[bool] = ..., share_parts: _Optional[_Iterable[str]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("version", "round", "run_id", "client_id", "local_steps", "lam", "sketch", "layers", "warm_start_leaf", "manifest", "evaluate_only")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    LOCAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    SKETCH_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    WARM_START_LEAF_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    EVALUATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    version: int
    round: int
    run_id: str
    client_id: str
    local_steps: int
    lam: float
    sketch: SketchSpec
    layers: _containers.RepeatedCompositeFieldContainer[LayerAssignment]
    warm_start_leaf: str
    manifest: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    evaluate_only: bool
    def __init__(self, version: _Optional[int] = ..., round: _Optional[int] = ..., run_id: _Optional[str] = ..., client_id: _Optional[str] = ..., local_steps: _Optional[int] = ..., lam: _Optional[float] = ..., sketch: _Optional[_Union[SketchSpec, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[LayerAssignment, _Mapping]]] = ..., warm_start_leaf: _Optional[str] = ..., manifest: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., evaluate_only: _Optional[bool] = ...) -> None: ...

class Pull(_message.Message):
    __slots__ = ("layer", "leaf", "xi_sum", "count")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    XI_SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    layer: int
    leaf: str
    xi_sum: float
    count: int
    def __init__(self, layer: _Optional[int] = ..., leaf: _Optional[str] = ..., xi_sum: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ClientReport(_message.Message):
    __slots__ = ("version", "round", "run_id", "client_id", "task_key", "task_index", "task_finished", "num_examples", "steps", "loss", "pulls", "manifest", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_KEY_FIELD_NUMBER: _ClassVar[int]
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    TASK_FINISHED_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    version: int
    round: int
    run_id: str
    client_id: str
    task_key: str
    task_index: int
    task_finished: bool
    num_examples: int
    steps: int
    loss: float
    pulls: _containers.RepeatedCompositeFieldContainer[Pull]
    manifest: _containers.RepeatedCompositeFieldContainer[TensorInfo]
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, version: _Optional[int] = ..., round: _Optional[int] = ..., run_id: _Optional[str] = ..., client_id: _Optional[str] = ..., task_key: _Optional[str] = ..., task_index: _Optional[int] = ..., task_finished: _Optional[bool] = ..., num_examples: _Optional[int] = ..., steps: _Optional[int] = ..., loss: _Optional[float] = ..., pulls: _Optional[_Iterable[_Union[Pull, _Mapping]]] = ..., manifest: _Optional[_Iterable[_Union[TensorInfo, _Mapping]]] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvalReport(_message.Message):
    __slots__ = ("version", "round", "client_id", "task_keys", "accuracies", "tasks_seen")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_KEYS_FIELD_NUMBER: _ClassVar[int]
    ACCURACIES_FIELD_NUMBER: _ClassVar[int]
    TASKS_SEEN_FIELD_NUMBER: _ClassVar[int]
    version: int
    round: int
    client_id: str
    task_keys: _containers.RepeatedScalarFieldContainer[str]
    accuracies: _containers.RepeatedScalarFieldContainer[float]
    tasks_seen: int
    def __init__(self, version: _Optional[int] = ..., round: _Optional[int] = ..., client_id: _Optional[str] = ..., task_keys: _Optional[_Iterable[str]] = ..., accuracies: _Optional[_Iterable[float]] = ..., tasks_seen: _Optional[int] = ...) -> None: ...

class LeafRecord(_message.Message):
    __slots__ = ("key", "client_id", "task_key", "task_index", "adapter_file", "num_examples")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_KEY_FIELD_NUMBER: _ClassVar[int]
    TASK_INDEX_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FILE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    key: str
    client_id: str
    task_key: str
    task_index: int
    adapter_file: str
    num_examples: int
    def __init__(self, key: _Optional[str] = ..., client_id: _Optional[str] = ..., task_key: _Optional[str] = ..., task_index: _Optional[int] = ..., adapter_file: _Optional[str] = ..., num_examples: _Optional[int] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("version", "round", "run_id", "tree", "bandit", "leaves", "config", "created_unix")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    version: int
    round: int
    run_id: str
    tree: bytes
    bandit: bytes
    leaves: _containers.RepeatedCompositeFieldContainer[LeafRecord]
    config: _containers.ScalarMap[str, str]
    created_unix: float
    def __init__(self, version: _Optional[int] = ..., round: _Optional[int] = ..., run_id: _Optional[str] = ..., tree: _Optional[bytes] = ..., bandit: _Optional[bytes] = ..., leaves: _Optional[_Iterable[_Union[LeafRecord, _Mapping]]] = ..., config: _Optional[_Mapping[str, str]] = ..., created_unix: _Optional[float] = ...) -> None: ...

class ErrorReply(_message.Message):
    __slots__ = ("version", "code", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    code: str
    reason: str
    def __init__(self, version: _Optional[int] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
