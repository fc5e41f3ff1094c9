"""Causal-LM instruction mode: a task stream read as (prompt, answer) pairs, scored by greedy decoding.

:class:`InstructionLM` is the task model the learner builds for a ``causal-lm`` backbone when
``LearnerConfig.lm_mode == "generate"`` (the default). It implements the same interface as
:class:`treelora.task_model.ClassifierModel` — ``encode`` / ``loss`` / ``predict`` — and has **no** ``head``, so only
the LoRA parameters train.

Prompts
    Exactly those of :meth:`treelora.streams.TaskStream.instruction_pairs`: for a classification stream
    ``"<instruction>\\nOptions: <readable names of the task's classes>.\\nText: <text>\\nAnswer:"`` with the class's
    readable name as the answer; an instruction-format JSONL example (``Example.answer`` set) keeps its text as the
    prompt and its answer as the target. The task of an ``encode`` call is the task of ``stream.tasks`` whose classes
    contain every label of the examples (all examples of one call come from one task); when several do (JSONL tasks
    may share classes), the one whose splits hold the examples wins. Note that the options name the task's classes,
    so the prompt carries the task identity, as in TRACE; the decoded answer is still mapped over every allowed
    (seen) class.

Training sequence
    ``[bos] + prompt + " " + answer + eos`` (BOS only when the tokenizer itself puts one first; SmolLM2 does not,
    tiny-llama does), right-padded; token targets (``lm_targets``) are -100 on the prompt and on padding, so the
    loss is the mean cross-entropy over answer tokens and the EOS. The prompt and the answer are tokenised
    separately (the answer with its leading space), so the generation prompt is token-for-token the training
    prefix.

Length limit
    The learner's ``max_length`` (default 32) is sized for classifier inputs; instruction prompts are longer
    (WordNet: about 45–80 SmolLM2 tokens with the answer). The effective limit is
    ``max(max_length, MIN_LM_LENGTH)`` = 128 tokens by default (or the ``max_length`` given to the constructor).
    A longer example is cut, never dropped: the answer keeps at most half the budget, the prompt's last line
    (``"Answer:"``) is kept (at most half of what remains, its end first), and the rest of the prompt is cut at
    its end, so the instruction and the options survive and the input text loses its tail.

Batches
    ``input_ids``/``attention_mask`` are right-padded, as :func:`treelora.data.iterate_batches` expects (it trims
    them to the longest row of a batch). The other sequences live under their own keys and are trimmed here:
    ``lm_targets`` (right-padded, cut to the batch's ``input_ids`` width in :meth:`InstructionLM.loss`) and
    ``prompt_ids``/``prompt_mask`` (the prompt alone, *left*-padded for batched generation, cut to the batch's
    longest prompt in :meth:`InstructionLM.predict`). ``labels`` are global class ids.

Scoring
    :meth:`InstructionLM.predict` decodes greedily (``do_sample=False``, one beam, at most the longest allowed
    answer + 2 new tokens), cuts at EOS/padding and at the first newline, and maps the text to a class with
    :func:`match_answer`: exact match of the normalised text (lower case, whitespace collapsed, trailing
    punctuation dropped), else a unique prefix match, else -1 (counted wrong). The released TreeLoRA evaluation
    *samples* with temperature 0.1; we decode greedily (its T → 0 limit), which is deterministic and differs from
    it only on near-ties.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["InstructionLM", "MIN_LM_LENGTH", "MAX_NEW_TOKENS", "lm_max_length", "normalize_answer", "match_answer"]

#: Floor of the effective token limit in instruction mode (the learner's ``max_length`` is for classifiers).
MIN_LM_LENGTH = 128
#: Cap on generated tokens, whatever the longest allowed answer.
MAX_NEW_TOKENS = 64

_TRAILING = string.punctuation + " \t"
_SPACES = re.compile(r"\s+")


def lm_max_length(max_length: int) -> int:
    """Effective token limit of instruction sequences: ``max(max_length, MIN_LM_LENGTH)``."""
    return max(int(max_length), MIN_LM_LENGTH)


def normalize_answer(text: str) -> str:
    """Decoded text → comparable answer: first line, lower case, whitespace collapsed, outer punctuation cut."""
    text = text.strip().split("\n", 1)[0]
    text = _SPACES.sub(" ", text.lower()).strip()
    return text.rstrip(_TRAILING).lstrip(" \t")


def match_answer(text: str, names: Mapping[int, str]) -> int:
    """Map a decoded answer to a class id among ``names`` (id → readable name); -1 when nothing matches.

    In order: (1) the normalised text equals a normalised name (the smallest id wins among duplicates);
    (2) names that the text starts with, at a word boundary (the model went on after the answer, e.g.
    ``"noun animal, noun plant"``) — they are nested, and the longest, most specific one wins; (3) the text is a
    prefix of exactly one name (an answer cut by the token limit, e.g. ``"noun anim"``); otherwise -1.
    """
    t = normalize_answer(text)
    if not t:
        return -1
    norm = sorted((int(c), normalize_answer(n)) for c, n in names.items())
    for c, n in norm:
        if n and t == n:
            return c
    heads = [(len(n), c) for c, n in norm if n and t.startswith(n) and not t[len(n)].isalnum()]
    if heads:
        return max(heads, key=lambda lc: (lc[0], -lc[1]))[1]
    tails = [c for c, n in norm if n.startswith(t)]
    return tails[0] if len(tails) == 1 else -1


class InstructionLM(nn.Module):
    """A causal LM (with LoRA) trained on instruction pairs and scored by greedy decoding (module docstring).

    ``model`` is the peft-wrapped ``*ForCausalLM``; ``stream`` the :class:`treelora.streams.TaskStream` whose
    prompts and readable class names it uses; ``max_length`` (optional) overrides the effective token limit.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, stream: Any, *, max_length: int | None = None) -> None:
        super().__init__()
        if getattr(stream, "modality", "text") != "text":
            raise ValueError(f"instruction mode needs a text stream, got {stream.modality!r} stream {stream.name!r}")
        if tokenizer is None:
            raise ValueError("instruction mode needs the backbone's tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.stream = stream
        self.max_length = max_length
        self._answer_tokens: dict[int, int] = {}
        self._keep_ok = True  # does the model's forward accept ``logits_to_keep``?

    # ------------------------------------------------------------------ tokenizer facts
    @staticmethod
    def _special_ids(tok: Any) -> tuple[list[int], int | None, int]:
        """(BOS prefix, EOS id, pad id). BOS only when the tokenizer itself starts a sequence with it."""
        bos, eos = getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None)
        prefix: list[int] = []
        if bos is not None:
            ids = tok("a")["input_ids"]
            if ids and ids[0] == bos:
                prefix = [int(bos)]
        pad = getattr(tok, "pad_token_id", None)
        pad = pad if pad is not None else (eos if eos is not None else 0)
        return prefix, (None if eos is None else int(eos)), int(pad)

    def _ids(self, tok: Any, text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"]) if text else []

    # ------------------------------------------------------------------ prompts
    def _task_of(self, examples: Sequence[Any]) -> Any:
        labels = {int(e.label) for e in examples}
        tasks = [t for t in self.stream.tasks if labels <= set(int(c) for c in t.classes)]
        if not tasks:
            raise ValueError(
                f"no task of stream {self.stream.name!r} holds the classes {sorted(labels)} of these examples"
            )
        if len(tasks) > 1:
            wanted = set(examples)
            for t in tasks:
                if wanted <= set(t.train) | set(t.test):
                    return t
        return tasks[0]

    def prompt_pairs(self, examples: Sequence[Any]) -> list[tuple[str, str]]:
        """(prompt, answer) per example, built as :meth:`TaskStream.instruction_pairs` builds them."""
        stream = self.stream
        options = ""
        if any(ex.answer is None for ex in examples):
            options = ", ".join(stream.readable(c) for c in self._task_of(examples).classes)
        pairs = []
        for ex in examples:
            if ex.answer is not None:
                pairs.append((ex.text or "", ex.answer))
                continue
            prompt = f"{stream.instruction}\nOptions: {options}.\nText: {ex.text}\nAnswer:"
            pairs.append((prompt, stream.readable(ex.label)))
        return pairs

    def _tokenize_pair(
        self, tok: Any, prompt: str, answer: str, limit: int, specials: tuple[list[int], int | None, int]
    ) -> tuple[list[int], list[int]]:
        """Token ids of (prompt incl. BOS, answer incl. EOS) within ``limit`` (see "Length limit")."""
        bos, eos, pad = specials
        ans = self._ids(tok, " " + answer)[: max(1, limit // 2)] + ([] if eos is None else [eos])
        head, sep, last = prompt.rpartition("\n")
        body, tail = (head, sep + last) if sep else (prompt, "")
        body_ids, tail_ids = self._ids(tok, body), self._ids(tok, tail)
        budget = max(1, limit - len(ans) - len(bos))
        if len(body_ids) + len(tail_ids) > budget:
            tail_ids = tail_ids[-max(1, budget // 2) :] if tail_ids else []
            body_ids = body_ids[: max(0, budget - len(tail_ids))]
        prompt_ids = bos + body_ids + tail_ids
        if not prompt_ids:  # the first answer token needs a position to be predicted from
            prompt_ids = [eos if eos is not None else pad]
        return prompt_ids, ans

    # ------------------------------------------------------------------ task-model interface
    def encode(self, examples: list[Any], tokenizer: Any, max_length: int) -> dict[str, torch.Tensor]:
        """Tensors for a split: ``input_ids``/``attention_mask``/``lm_targets`` (prompt + answer + EOS, right
        padding), ``prompt_ids``/``prompt_mask`` (prompt only, left padding) and ``labels`` (global class ids)."""
        if not examples:
            raise ValueError("cannot encode an empty split")
        tok = tokenizer if tokenizer is not None else self.tokenizer
        limit = int(self.max_length) if self.max_length else lm_max_length(max_length)
        specials = self._special_ids(tok)
        pad = specials[2]
        rows = [self._tokenize_pair(tok, p, a, limit, specials) for p, a in self.prompt_pairs(examples)]
        n = len(rows)
        width = max(len(p) + len(a) for p, a in rows)
        pwidth = max(len(p) for p, _ in rows)
        input_ids = torch.full((n, width), pad, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        targets = torch.full((n, width), -100, dtype=torch.long)
        prompt_ids = torch.full((n, pwidth), pad, dtype=torch.long)
        prompt_mask = torch.zeros((n, pwidth), dtype=torch.long)
        for i, (p, a) in enumerate(rows):
            seq = torch.tensor(p + a, dtype=torch.long)
            input_ids[i, : len(seq)] = seq
            attention[i, : len(seq)] = 1
            targets[i, len(p) : len(seq)] = torch.tensor(a, dtype=torch.long)
            prompt_ids[i, pwidth - len(p) :] = torch.tensor(p, dtype=torch.long)
            prompt_mask[i, pwidth - len(p) :] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "lm_targets": targets,
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "labels": torch.tensor([int(e.label) for e in examples], dtype=torch.long),
        }

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits of the (right-padded) training sequences."""
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Mean token cross-entropy over the answer tokens (and EOS). ``classes`` is unused (interface)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        width = ids.shape[1]
        targets = batch["lm_targets"][:, :width]
        answer = targets != -100
        if not bool(answer.any()):
            raise ValueError("batch has no answer tokens (all targets masked)")
        # Logits are needed only from the position before the earliest answer token on: keep that suffix, which
        # saves most of the vocabulary projection on long prompts.
        first = int(answer.float().argmax(dim=1)[answer.any(dim=1)].min())
        keep = width - max(first - 1, 0)
        logits = None
        if self._keep_ok:
            try:
                logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
            except TypeError:
                self._keep_ok = False
        if logits is None:
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -keep:]
        start = width - keep  # position of logits[:, 0]
        pred = logits[:, :-1].float()
        gold = targets[:, start + 1 :]
        return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), gold.reshape(-1), ignore_index=-100)

    def _names(self, classes: torch.Tensor) -> dict[int, str]:
        return {int(c): self.stream.readable(int(c)) for c in classes.tolist()}

    def _max_new_tokens(self, names: Mapping[int, str]) -> int:
        for c, name in names.items():
            if c not in self._answer_tokens:
                self._answer_tokens[c] = len(self._ids(self.tokenizer, " " + name))
        longest = max((self._answer_tokens[c] for c in names), default=1)
        return max(1, min(MAX_NEW_TOKENS, longest + 2))

    @torch.no_grad()
    def _generate_rows(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation token ids of the batch's prompts, each cut at its first EOS/padding."""
        from transformers import GenerationConfig

        tok = self.tokenizer
        _, eos, pad = self._special_ids(tok)
        pmask = batch["prompt_mask"]
        pwidth = max(1, int(pmask.sum(dim=1).max()))
        ids, mask = batch["prompt_ids"][:, -pwidth:], pmask[:, -pwidth:]
        config = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(max_new_tokens),
            pad_token_id=pad,
            eos_token_id=eos,
            bos_token_id=getattr(tok, "bos_token_id", None),
        )
        was_training = self.training
        self.eval()  # no LoRA dropout: decoding must be deterministic
        try:
            out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        finally:
            self.train(was_training)
        stops = {x for x in (eos, pad) if x is not None}
        rows = []
        for row in out[:, ids.shape[1] :].tolist():
            rows.append(row[: next((i for i, t in enumerate(row) if t in stops), len(row))])
        return rows

    def generate_answers(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[str]:
        """Greedy continuations of the batch's prompts, cut at EOS/padding (special tokens dropped)."""
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in self._generate_rows(batch, max_new_tokens)]

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Global class id per row from the greedy answer (:func:`match_answer` over ``classes``), -1 if none."""
        return self.predict_sets(batch, [classes])[0]

    @torch.no_grad()
    def predict_sets(self, batch: dict[str, torch.Tensor], class_sets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """:meth:`predict` over each of several class sets from **one** decoding pass.

        Greedy decoding is causal, so the answer under a smaller token budget is the prefix of the longest one's:
        decode once at the largest set's budget and cut each row at each set's own budget before matching. The
        result equals one :meth:`predict` per set at a fraction of the cost (the evaluation's CIL and TIL views)."""
        names = [self._names(c) for c in class_sets]
        budgets = [self._max_new_tokens(n) for n in names]
        rows = self._generate_rows(batch, max(budgets))
        device = batch["labels"].device if "labels" in batch else batch["prompt_ids"].device
        texts = {b: [self.tokenizer.decode(r[:b], skip_special_tokens=True) for r in rows] for b in set(budgets)}
        return [torch.tensor([match_answer(t, n) for t in texts[b]], dtype=torch.long, device=device)
                for n, b in zip(names, budgets)]
