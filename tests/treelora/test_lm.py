"""Causal-LM instruction mode (treelora.lm) on tiny-llama + the synthetic-text stream."""

import json
import math

import pytest
import torch

from treelora.backbones import load_backbone
from treelora.config import make_config
from treelora.data import iterate_batches
from treelora.learner import ContinualLearner
from treelora.lm import InstructionLM, lm_max_length, match_answer, normalize_answer
from treelora.streams import load_stream


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are fastest on one thread (and two threads collapse on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def stream():
    s = load_stream("synthetic-text", train_per_class=16, test_per_class=8)
    s.tasks = s.tasks[:2]
    return s


def learner(method: str, stream, **kw) -> ContinualLearner:
    backbone = load_backbone("tiny-llama", attn_implementation="eager")
    cfg = make_config(method, epochs=1, batch_size=8, progress=False, **kw)
    return ContinualLearner(backbone, stream.num_classes(), cfg, stream=stream)


def test_learner_builds_an_instruction_lm_without_head(stream):
    lrn = learner("seqlora", stream)
    assert isinstance(lrn.model, InstructionLM) and getattr(lrn.model, "head", None) is None
    trainable = [n for n, p in lrn.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert lrn.lora.num_layers == 4  # q_proj and v_proj of 2 blocks


def test_encode_prompts_labels_and_masks(stream):
    lrn = learner("seqlora", stream)
    tok = lrn.tokenizer
    task = stream.tasks[1]  # global classes 2, 3: labels must be global ids
    enc = lrn.encode(task.train)
    assert enc["labels"].tolist() == [e.label for e in task.train] and set(enc["labels"].tolist()) == {2, 3}
    assert lrn.model.prompt_pairs(task.train) == stream.instruction_pairs(1, "train")
    pairs = stream.instruction_pairs(1, "train")
    assert "Options: color, animal." in pairs[0][0]
    for i, (prompt, answer) in enumerate(pairs[:5]):
        n = int(enc["attention_mask"][i].sum())
        assert enc["attention_mask"][i, :n].all() and not enc["attention_mask"][i, n:].any()  # right padding
        ids = enc["input_ids"][i, :n].tolist()
        p_ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(" " + answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids == p_ids + a_ids
        tgt = enc["lm_targets"][i]
        assert (tgt[: len(p_ids)] == -100).all() and (tgt[n:] == -100).all()  # prompt and padding masked
        assert tgt[len(p_ids) : n].tolist() == a_ids
        pm = enc["prompt_mask"][i]
        k = int(pm.sum())
        assert k == len(p_ids) and pm[-k:].all()  # left padding for generation
        assert enc["prompt_ids"][i, -k:].tolist() == p_ids
        assert "options : color, animal." in tok.decode(enc["prompt_ids"][i, -k:])  # the uncased WordPiece vocab

    # a shard of a split (as a federated client encodes it) finds its task from its labels
    shard = task.train[::3]
    assert lrn.model.prompt_pairs(shard)[0] == pairs[0]
    with pytest.raises(ValueError, match="no task"):
        lrn.model.prompt_pairs([stream.tasks[0].train[0], task.train[0]])


def test_effective_length_and_truncation(stream):
    assert lm_max_length(32) == 128 and lm_max_length(300) == 300
    backbone = load_backbone("tiny-llama")
    tok = backbone.tokenizer
    lm = InstructionLM(backbone.model, tok, stream, max_length=16)
    enc = lm.encode(stream.tasks[0].train, tok, 32)
    assert enc["input_ids"].shape[1] <= 16
    for i, ex in enumerate(stream.tasks[0].train[:4]):
        n = int(enc["attention_mask"][i].sum())
        ids = enc["input_ids"][i, :n].tolist()
        answer = tok(" " + stream.readable(ex.label), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids[-len(answer) :] == answer  # the answer survives whole
        assert tok.decode(ids[: -len(answer)]).endswith("answer :")  # so does the prompt's last line
        assert tok.decode(ids).startswith("[CLS] which kind of word")  # and its start; the input text is cut


def test_instruction_jsonl_examples_keep_prompt_and_answer(tmp_path):
    rows = [
        {"task": "qa", "split": "train", "prompt": "Q: two plus two?\nA:", "answer": "four"},
        {"task": "qa", "split": "train", "prompt": "Q: one plus two?\nA:", "answer": "three"},
        {"task": "qa", "split": "test", "prompt": "Q: two plus one?\nA:", "answer": "three"},
    ]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    s = load_stream(f"jsonl:{path}")
    backbone = load_backbone("tiny-llama")
    lm = InstructionLM(backbone.model, backbone.tokenizer, s)
    assert lm.prompt_pairs(s.tasks[0].train) == [("Q: two plus two?\nA:", "four"), ("Q: one plus two?\nA:", "three")]
    enc = lm.encode(s.tasks[0].train, backbone.tokenizer, 32)
    assert enc["labels"].tolist() == [0, 1]
    first = enc["lm_targets"][0]
    assert first[first != -100].tolist()[:-1] == backbone.tokenizer(" four", add_special_tokens=False)["input_ids"]


def test_loss_is_finite_and_decreases(stream):
    lrn = learner("seqlora", stream)
    model = lrn.model
    enc = lrn.encode(stream.tasks[0].train)
    classes = torch.tensor(stream.tasks[0].classes)
    opt = torch.optim.Adam(lrn.lora.parameters(), lr=1e-2)
    model.train()
    losses = []
    for step in range(20):
        batch = next(iterate_batches(enc, 8, shuffle=True, seed=step))
        loss = model.loss(batch, classes)
        assert math.isfinite(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1

    # the suffix-only logits give the same loss as the full sequence
    batch = next(iterate_batches(enc, 8, shuffle=False))
    model.eval()
    with torch.no_grad():
        logits = model(batch)[:, :-1]
        gold = batch["lm_targets"][:, : batch["input_ids"].shape[1]][:, 1:]
        full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1))
        assert torch.allclose(model.loss(batch, classes), full, atol=1e-5)


def test_predict_is_greedy_deterministic_and_in_classes(stream):
    lrn = learner("seqlora", stream)
    model = lrn.model
    enc = lrn.encode(stream.tasks[0].test)
    batch = next(iterate_batches(enc, 8, shuffle=False))
    classes = torch.tensor([0, 1, 2, 3])
    model.eval()
    with torch.no_grad():
        first = model.predict(batch, classes)
        second = model.predict(batch, classes)
    assert first.dtype == torch.long and first.shape == (8,)
    assert set(first.tolist()) <= {-1, 0, 1, 2, 3}
    assert torch.equal(first, second)
    model.train()  # predict switches LoRA dropout off itself and restores the mode
    with torch.no_grad():
        assert torch.equal(model.predict(batch, classes), first)
    assert model.training

    # left-padded batched decoding = one prompt at a time without padding, by hand
    model.eval()
    texts = model.generate_answers(batch, 3)
    tok = lrn.tokenizer
    for i in (0, 5):
        k = int(batch["prompt_mask"][i].sum())
        ids = batch["prompt_ids"][i : i + 1, -k:]
        out = []
        with torch.no_grad():
            for _ in range(3):
                nxt = int(model.model(input_ids=ids).logits[0, -1].argmax())
                if nxt in (tok.eos_token_id, tok.pad_token_id):
                    break
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        assert texts[i] == tok.decode(out, skip_special_tokens=True)


def test_predict_maps_text_to_global_ids(stream, monkeypatch):
    lrn = learner("seqlora", stream)
    enc = lrn.encode(stream.tasks[1].test)
    batch = next(iterate_batches(enc, 4, shuffle=False))
    said = ["Color.", "animal", "fruit", "nothing"]
    ids = [lrn.tokenizer(t, add_special_tokens=False)["input_ids"] for t in said]
    monkeypatch.setattr(lrn.model, "_generate_rows", lambda b, n: ids[: len(b["labels"])])
    pred = lrn.model.predict(batch, torch.tensor([2, 3]))  # "fruit" (class 0) is not allowed
    assert pred.tolist() == [2, 3, -1, -1]


def test_predict_sets_is_one_predict_per_set_from_one_decoding(stream, monkeypatch):
    """The CIL and TIL views decode once at the larger budget; each set's answer is cut at its own budget, so
    the result equals a separate predict per set (greedy decoding is causal)."""
    lrn = learner("seqlora", stream)
    model = lrn.model
    batch = next(iterate_batches(lrn.encode(stream.tasks[1].test), 8, shuffle=False))
    sets = [torch.tensor(list(range(stream.num_classes()))), torch.tensor(list(stream.tasks[1].classes))]
    model.eval()
    separate = [model.predict(batch, c) for c in sets]
    calls = []
    real = model._generate_rows
    monkeypatch.setattr(model, "_generate_rows", lambda b, n: calls.append(n) or real(b, n))
    together = model.predict_sets(batch, sets)
    assert len(calls) == 1 and calls[0] == max(model._max_new_tokens(model._names(c)) for c in sets)
    assert all(torch.equal(a, b) for a, b in zip(separate, together))


def test_answer_matching():
    names = {4: "noun animal", 5: "noun artifact", 7: "verb motion", 9: "noun act", 10: "noun action"}
    assert normalize_answer("  Noun   Animal.\nmore") == "noun animal"
    assert match_answer("noun animal", names) == 4  # exact
    assert match_answer("Noun Animal", names) == 4  # case
    assert match_answer(" noun animal.", names) == 4  # trailing punctuation and spaces
    assert match_answer("verb motion!", names) == 7
    assert match_answer("noun animal, noun artifact", names) == 4  # went on after the answer
    assert match_answer("noun action taken", names) == 10  # word boundary: not "noun act"
    assert match_answer("noun act of", names) == 9  # word boundary: not "noun action"
    assert match_answer("noun anim", names) == 4  # cut short: a unique prefix of a name
    assert match_answer("verb", names) == 7
    assert match_answer("noun a", names) == -1  # prefix of several names
    assert match_answer("noun", names) == -1
    assert match_answer("adjective", names) == -1  # unknown
    assert match_answer("", names) == -1 and match_answer(" .\n", names) == -1
    assert match_answer("\nnoun animal", names) == 4  # leading newline is whitespace, not a cut
    nested = {1: "red", 2: "red wine"}
    assert match_answer("red wine please", nested) == 2  # nested prefixes: the longest wins
    assert match_answer("red car", nested) == 1 and match_answer("red", nested) == 1
    assert match_answer("re", nested) == -1


@pytest.mark.parametrize("method", ["seqlora", "treelora"])
def test_learner_runs_instruction_stream_end_to_end(method, stream):
    lrn = learner(method, stream)
    res = lrn.run_stream(stream)
    R = res["accuracy_matrix"]
    assert len(R) == 2 and R[0][1] is None and all(0.0 <= x <= 1.0 for x in (R[0][0], R[1][0], R[1][1]))
    assert all(math.isfinite(v) for v in res["metrics"].values())
    assert res["steps_per_task"] == [4, 4]  # 32 examples / batch 8
    assert all(math.isfinite(x) and x > 0 for x in res["mean_loss_per_task"])
    assert sorted(res["tree"]["tasks"]) == ["t0", "t1"]
    if method == "treelora":
        assert sum(res["chosen_per_task"][1].values()) == 4 * lrn.lora.num_layers
        assert res["reg_time_per_task_s"][1] > 0
    assert not any("head" in k for k in lrn.adapter_state())
