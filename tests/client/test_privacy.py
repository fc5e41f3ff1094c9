"""What leaves a client is exactly: adapters, sketches, counts and metrics (``fedproto``: per-class feature sums and
their counts instead of adapters and sketches). Inspects every message sent."""

import re

import numpy as np
import pytest

from client.client_app import app as client_app
from protos import treelora_fed_pb2 as pb
from protos.envelope import unpack
from server.local_grid import LocalGrid
from server.loop import run
from treelora.fed.settings import FedSettings

ALLOWED_TENSORS = re.compile(r"^(adapter\.\d+\.[AB]|sketch\.\d+|final\.\d+)$")
PROTO_TENSORS = re.compile(r"^proto\.\d+\.(sum|count)$")  # fedproto's only tensors: a class's feature sum, count
ALLOWED_METRICS = re.compile(r"^(train_s|loss|model_bytes|stream_done|probe|last_round|(acc|til|ti)/c\d+/t\d+)$")
REPORT_FIELDS = {"version", "round", "run_id", "client_id", "task_key", "task_index", "task_finished",
                 "num_examples", "steps", "loss", "pulls", "manifest", "metrics"}
EVAL_FIELDS = {"version", "round", "client_id", "task_keys", "accuracies", "tasks_seen"}


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privacy")
    rc = {"stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2, "rounds-per-task": 2,
          "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8,
          "regularizer": "l1-grad-fd", "sketch-dim": 64, "out-dir": str(tmp / "server")}
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp / "clients"))
    run(grid, FedSettings.from_run_config(rc), progress=False)
    from client.learner_cache import stream_for

    stream = stream_for(FedSettings.from_run_config(rc))
    texts = {e.text for t in stream.tasks for e in t.train + t.test}
    return grid, texts


def test_only_adapters_sketches_counts_and_metrics_leave_a_client(federation):
    grid, texts = federation
    assert grid.received
    kinds = set()
    for reply in grid.received:
        kinds.add(reply.metadata.message_type)
        assert set(reply.content.keys()) <= {"control", "tensors"}
        control, arrays = unpack(reply.content)
        if reply.metadata.message_type == "evaluate":
            msg = pb.EvalReport.FromString(control)
            assert {f.name for f, _ in msg.ListFields()} <= EVAL_FIELDS
            assert not arrays
        else:
            msg = pb.ClientReport.FromString(control)
            assert {f.name for f, _ in msg.ListFields()} <= REPORT_FIELDS
            for key in msg.metrics:
                assert ALLOWED_METRICS.match(key), key
            for name, arr in arrays.items():
                assert ALLOWED_TENSORS.match(name), name
                assert arr.dtype in (np.float32, np.int16, np.float16)
            declared = {i.name for i in msg.manifest}
            assert declared == set(arrays)
            # sizes: an adapter layer is (r x d_in, d_out x r), a sketch is sketch-dim floats; nothing else
            for name, arr in arrays.items():
                if name.startswith(("sketch.", "final.")):
                    assert arr.shape == (64,)
                else:
                    assert 8 in arr.shape and arr.ndim == 2
        blob = control + b"".join(a.tobytes() for a in arrays.values())
        for text in list(texts)[:200]:
            assert text.encode() not in blob
    assert kinds == {"train", "query", "evaluate"}


def test_sketches_are_not_the_raw_signature(federation):
    grid, _ = federation
    for reply in grid.received:
        if reply.metadata.message_type != "train":
            continue
        _, arrays = unpack(reply.content)
        for name, arr in arrays.items():
            if name.startswith("sketch."):
                layer = int(name.split(".")[1])
                a, b = arrays[f"adapter.{layer}.A"], arrays[f"adapter.{layer}.B"]
                assert arr.size * 8 == a.size + b.size  # s = 64 numbers stand for a 512-number layer gradient


@pytest.fixture(scope="module")
def proto_federation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privacy-proto")
    rc = {"method": "fedproto", "stream": "synthetic-text", "backbone": "tiny-bert", "tasks-per-client": 2,
          "rounds-per-task": 2, "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 8,
          "out-dir": str(tmp / "server")}
    grid = LocalGrid(client_app, 2, run_config=rc, state_dir=str(tmp / "clients"))
    res = run(grid, FedSettings.from_run_config(rc), progress=False)
    from client.learner_cache import stream_for

    stream = stream_for(FedSettings.from_run_config(rc))
    return grid, res, {e.text for t in stream.tasks for e in t.train + t.test}


def test_fedproto_sends_only_class_feature_sums_counts_and_metrics(proto_federation):
    grid, res, texts = proto_federation
    assert not res["errors"] and grid.received
    assert "prototypes" in res["privacy"]["not_covered"]  # stated: no DP covers them
    widths = set()
    for reply in grid.received:
        control, arrays = unpack(reply.content)
        if reply.metadata.message_type == "evaluate":
            assert not arrays
            continue
        msg = pb.ClientReport.FromString(control)
        assert {f.name for f, _ in msg.ListFields()} <= REPORT_FIELDS and not msg.pulls
        for key in msg.metrics:
            assert ALLOWED_METRICS.match(key), key
        assert {i.name for i in msg.manifest} == set(arrays)
        for name, arr in arrays.items():
            assert PROTO_TENSORS.match(name), name
            assert arr.dtype == np.float32
            if name.endswith(".count"):
                assert arr.shape == (1,) and arr[0] == int(arr[0]) >= 1
            else:
                widths.add(arr.shape)
        blob = control + b"".join(a.tobytes() for a in arrays.values())
        for text in list(texts)[:200]:
            assert text.encode() not in blob
    assert len(widths) == 1 and len(next(iter(widths))) == 1  # one feature vector per class, nothing per example
