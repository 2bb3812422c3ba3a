"""open_clip models for scoring: references, preprocessing (CPU) and embeddings (CPU or GPU).

A model is named by `score.model` and `score.pretrained`:

    ViT-B-32 + laion2b_s34b_b79k      an open_clip architecture and pretrained tag (downloaded into the
                                      Hugging Face cache where the network allows)
    ViT-B-32 + /path/to/ckpt.pt       an architecture and a checkpoint file
    local-dir:/path  or  /path        a folder with open_clip_config.json (model_cfg, preprocess_cfg),
                                      open_clip_model.safetensors and, for an HF tokenizer, its files
    builtin:tiny-clip-synth           a folder shipped in captioners/models/ (python -m captioners.train_clip)
    keye-tiny-clip + null             a tiny architecture registered from captioners/model_configs/
                                      (random weights: tests and benchmarks of the plumbing)

The work is split the way the pipeline runs it: `ClipPreprocessor` (decoded pixels -> normalised
tensors, texts -> token ids) needs only the configs and runs on CPU workers before batching;
`ClipModel` holds the weights and turns batches into L2-normalised embeddings on the device.
`ClipScorer` glues both for Beam-free callers (training, benchmarks, tests).

Batch invariance: an element's embedding must not depend on which other elements share its
batch, or shards would differ between runs (Beam sizes batches adaptively). Forward passes
therefore always run on chunks of exactly `forward_chunk` rows, the last one padded: same
shapes, same kernels, same bits (tests/test_clip_scoring.py checks it).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(PACKAGE_DIR, "model_configs")
BUILTIN_DIR = os.path.join(PACKAGE_DIR, "models")
BUILTIN_PREFIX = "builtin:"
LOCAL_PREFIX = "local-dir:"
FORWARD_CHUNK = 8


@functools.lru_cache(maxsize=None)
def register_configs() -> None:
    """Make the project's model configs (captioners/model_configs/*.json) known to open_clip."""
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


@dataclass(frozen=True)
class ClipRef:
    """Which open_clip model: an architecture name or folder, and optionally pretrained weights."""

    model: str
    pretrained: Optional[str] = None

    @property
    def open_clip_name(self) -> str:
        """The name open_clip's factory understands (folders as local-dir:PATH)."""
        if self.model.startswith(BUILTIN_PREFIX):
            path = os.path.join(BUILTIN_DIR, self.model[len(BUILTIN_PREFIX):])
            if not os.path.isdir(path):
                raise FileNotFoundError(f"no bundled CLIP model {self.model!r} in {BUILTIN_DIR}")
            return LOCAL_PREFIX + path
        if not self.model.startswith(LOCAL_PREFIX) and os.path.isdir(self.model):
            return LOCAL_PREFIX + os.path.abspath(self.model)
        return self.model

    @property
    def local_dir(self) -> Optional[str]:
        name = self.open_clip_name
        return name[len(LOCAL_PREFIX):] if name.startswith(LOCAL_PREFIX) else None

    @property
    def id(self) -> str:
        """A short stable name for logs and reports."""
        if self.pretrained and os.path.isfile(self.pretrained):
            return f"{self.model}+{os.path.basename(self.pretrained)}"
        return f"{self.model}+{self.pretrained}" if self.pretrained else self.model

    def model_config(self) -> dict:
        """open_clip's model_cfg (embed_dim, vision_cfg, text_cfg), without loading weights."""
        import open_clip

        register_configs()
        local = self.local_dir
        if local is not None:
            with open(os.path.join(local, "open_clip_config.json"), encoding="utf-8") as f:
                return json.load(f)["model_cfg"]
        cfg = open_clip.get_model_config(self.model.replace("/", "-"))
        if cfg is None:
            raise ValueError(f"unknown open_clip model {self.model!r}; known: {open_clip.list_models()[:8]}...")
        return cfg

    def preprocess_config(self) -> dict:
        """The final preprocessing config open_clip would attach to the model (size, mean, std,
        interpolation, resize mode), computed from configs alone so CPU workers need no weights."""
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict
        from open_clip.pretrained import get_pretrained_cfg

        cfg = asdict(PreprocessCfg())
        model_cfg = self.model_config()
        local = self.local_dir
        if local is not None:
            with open(os.path.join(local, "open_clip_config.json"), encoding="utf-8") as f:
                cfg = merge_preprocess_dict(cfg, json.load(f).get("preprocess_cfg", {}))
        elif self.pretrained:
            tag_cfg = get_pretrained_cfg(self.model.replace("/", "-"), self.pretrained)
            if tag_cfg:
                cfg = merge_preprocess_dict(cfg, tag_cfg)
        vision = model_cfg.get("vision_cfg", {})
        size = vision.get("image_size", 224)
        # as open_clip sets it from the built tower: ModifiedResNet keeps an int, ViT and timm towers (h, w)
        resnet = isinstance(vision.get("layers"), (list, tuple)) and "timm_model_name" not in vision
        cfg["size"] = size if resnet or not isinstance(size, int) else (size, size)
        if isinstance(cfg["size"], list):
            cfg["size"] = tuple(cfg["size"])
        return cfg


def resolve_device(device: str) -> str:
    """auto: the first CUDA device when there is one, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ClipPreprocessor:
    """CPU side of scoring: decoded RGB arrays -> normalised pixel tensors; texts -> token ids."""

    def __init__(self, ref: ClipRef) -> None:
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        register_configs()
        self.ref = ref
        self.config = ref.preprocess_config()
        self.transform = image_transform_v2(PreprocessCfg(**self.config), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(ref.open_clip_name)
        size = self.config["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.context_length = int(getattr(self.tokenizer, "context_length", 77))

    def images(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """(n, 3, H, W) float32, exactly open_clip's eval transform."""
        from PIL import Image

        if not arrays:
            return np.zeros((0, 3, *self.image_size), np.float32)
        return np.stack([self.transform(Image.fromarray(a)).numpy() for a in arrays]).astype(np.float32, copy=False)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, context_length) int64 token ids (truncated to the model's context)."""
        if not texts:
            return np.zeros((0, self.context_length), np.int64)
        return self.tokenizer(list(texts)).numpy().astype(np.int64, copy=False)


class ClipModel:
    """Device side of scoring: batches of pixels and token ids -> unit embeddings (float32)."""

    def __init__(self, ref: ClipRef, device: str = "auto", precision: str = "fp32",
                 forward_chunk: int = FORWARD_CHUNK) -> None:
        import open_clip
        import torch

        register_configs()
        self.ref = ref
        self.device = resolve_device(device)
        self.forward_chunk = forward_chunk
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)      # weights left random (no pretrained) are the same in every process
            self.model = open_clip.create_model(ref.open_clip_name, pretrained=None if ref.local_dir else ref.pretrained,
                                                precision=precision, device=self.device)
        self.model.eval()
        self.dtype = next(self.model.parameters()).dtype
        self.embed_dim = int(ref.model_config()["embed_dim"])
        self._torch = torch

    def _encode(self, fn, x: np.ndarray, dtype) -> np.ndarray:
        torch = self._torch
        n = len(x)
        if n == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        out = []
        k = self.forward_chunk
        with torch.inference_mode():
            for start in range(0, n, k):
                chunk = x[start:start + k]
                if len(chunk) < k:   # pad: every forward has the same shape (batch invariance)
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], k - len(chunk), axis=0)])
                t = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device)
                if dtype is not None:
                    t = t.to(dtype)
                emb = fn(t, normalize=True).float().cpu().numpy()
                out.append(emb[:min(k, n - start)])
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._encode(self.model.encode_image, pixels, self.dtype)

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._encode(self.model.encode_text, tokens, None)


class ClipScorer:
    """Preprocessor + model in one object, for callers outside Beam."""

    def __init__(self, ref: ClipRef, device: str = "auto", precision: str = "fp32") -> None:
        self.pre = ClipPreprocessor(ref)
        self.model = ClipModel(ref, device, precision)

    def embed_images(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self.model.encode_images(self.pre.images(arrays))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode_texts(self.pre.texts(texts))

    def similarity(self, arrays: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """Cosine of image i and text i."""
        return np.sum(self.embed_images(arrays) * self.embed_texts(texts), axis=1)
