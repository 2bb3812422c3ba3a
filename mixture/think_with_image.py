"""Think-with-image rows (`/agentic_think`): the model operates on the image with code (keye.md 4.5, 8).

    one-image QA row
      ─code_prompt + image─▶ generator: "I will crop/rotate/enhance ..." + ```python``` block
            no code block: no_image_code
      ─sandbox.run(code, {"image.png": the image})─▶ files in /output        (mixture/sandbox/: bubblewrap)
            the sandbox's reason (code_error, code_timeout, code_forbidden, ...) when it fails
      ─check the produced image─▶ none: no_image_produced · undecodable / zero-size / one flat colour:
            empty_image_produced · same pixels as the input: image_unchanged · native size outside the
            image token bounds or aspect ratio: image_out_of_bounds
      ─continue_prompt + [image, produced image]─▶ generator: more reasoning + answer; verified
            (wrong: never_solved)
      ─▶ <think>reasoning ```python code``` <sandbox_output>[produced image]</sandbox_output> more
         reasoning</think><answer>... \\boxed{X}</answer>; the produced image is a new media item of the
         row (`KEY.<i>.000.png` at its smart_resize size, its own visual tokens) ─▶ gates ─▶ `<id>@agentic`

A worker holds one sandbox (probed once in setup: no isolation, no run) and one row's images.
"""
from __future__ import annotations

import hashlib
import io
import math
from typing import Optional

import numpy as np

from mixture.common import QA, Builder
from mixture.formats import closed_form, think_with_image_parts
from mixture.generate import Call, MediaUnavailable, as_png, parse_code, parse_reasoning
from schemas.reasons import Reason
from schemas.sample import MediaItem, Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ThinkWithImageBuilder(Builder):
    category = "think_with_image"

    def __init__(self, cfg, generator=None, sandbox=None) -> None:
        super().__init__(cfg, generator)
        self.sandbox = sandbox

    def needs_generator(self) -> bool:
        return self.b.think_with_image.enabled

    def setup(self) -> None:
        super().setup()
        if self.sandbox is None:
            from mixture.sandbox import Sandbox

            section = getattr(self.cfg.mixture, "sandbox", None)
            self.sandbox = Sandbox.from_config(section) if section is not None else Sandbox()
        self.sandbox.setup()          # SandboxUnavailable here fails the stage closed: no code runs unconfined

    def section(self):
        return self.b.think_with_image

    def material(self, sample: Sample) -> bool:
        return len(sample.media) == 1 and sample.media[0].kind == "image"

    def build(self, sample: Sample, qa: QA):
        cfg = self.b.think_with_image
        try:
            source = as_png(self.images_of(sample)[0])
        except (MediaUnavailable, OSError, ValueError) as e:      # MediaUnavailable is a ValueError
            return self.reject(sample, Reason.GENERATION_FAILED, f"the image: {e}")
        first = self.generator.run([Call(sample.id, cfg.code_prompt, {"question": qa.question,
                                                                       "image_name": cfg.image_name},
                                         [source], target="image_code")])[0]
        if not first.ok:
            return self.reject(sample, Reason.GENERATION_FAILED, f"image code: {first.error}")
        parsed = parse_code(first.text)
        if parsed is None or not parsed[0]:
            return self.reject(sample, Reason.NO_IMAGE_CODE, f"no reasoning and python block in {first.text[:200]!r}")
        before, code = parsed
        result = self.sandbox.run(code, {cfg.image_name: source})
        if not result.ok:
            return self.reject(sample, result.reason or Reason.NO_IMAGE_PRODUCED, f"sandbox: {result.detail}")
        produced = self.check_image(sample, source, result.files)
        if not isinstance(produced, tuple):
            return produced
        png, (h, w) = produced
        second = self.generator.run([Call(sample.id, cfg.continue_prompt, {"question": qa.question, "code": code},
                                          [source, png], target="continuation")])[0]
        if not second.ok:
            return self.reject(sample, Reason.GENERATION_FAILED, f"continuation: {second.error}")
        after = parse_reasoning(second.text)
        if not after.reasoning or not self.verifier.verify(after.answer, qa.answer, qa.question).correct:
            return self.reject(sample, Reason.NEVER_SOLVED, f"after the image operation the answer "
                               f"{after.answer[:100]!r} is not {qa.answer[:100]!r}")
        row = self.derive(sample, qa, [], records=[first.record, second.record])
        index = len(row.media)
        row.media.append(self.media_item(row.id, index, png, h, w))
        row.blobs[row.media[-1].members[0]] = self.model_size_png(png, row.media[-1])
        row.messages[-1].content = think_with_image_parts(before, code, index, after.reasoning, qa.answer,
                                                          closed_form(qa.answer, self.b.boxed_max_words))
        return self.finish(sample, row, generated=f"{before}\n{after.reasoning}")

    # --- the produced image -------------------------------------------------------------------------
    def check_image(self, sample: Sample, source: bytes, files: dict[str, bytes]):
        """(PNG bytes, (h, w)) of the first produced image, or the Rejected row saying what is wrong."""
        from PIL import Image

        s = self.cfg.media.sampling
        names = sorted(n for n in files if n.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            return self.reject(sample, Reason.NO_IMAGE_PRODUCED, f"files written: {sorted(files)[:8]}")
        data = files[names[0]]
        try:
            img = Image.open(io.BytesIO(data))
            w, h = img.size
        except Exception as e:  # noqa: BLE001 - untrusted bytes: any decoder error means no usable image
            return self.reject(sample, Reason.EMPTY_IMAGE_PRODUCED, f"{names[0]}: {type(e).__name__}: {e}"[:300])
        native = math.ceil(h / s.patch_size) * math.ceil(w / s.patch_size)
        if w < 1 or h < 1 or not s.image_min_tokens <= native <= s.image_max_tokens \
                or max(h, w) / max(1, min(h, w)) > s.max_aspect_ratio:
            return self.reject(sample, Reason.IMAGE_OUT_OF_BOUNDS,
                               f"{names[0]}: {w}x{h} is {native} tokens natively; bounds "
                               f"{s.image_min_tokens}..{s.image_max_tokens}, aspect ratio <= {s.max_aspect_ratio:g}")
        try:
            pixels = np.asarray(img.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - truncated or corrupt image data
            return self.reject(sample, Reason.EMPTY_IMAGE_PRODUCED, f"{names[0]}: {type(e).__name__}: {e}"[:300])
        if pixels.size == 0 or float(pixels.reshape(-1, 3).std(axis=0).max()) < 1.0:    # nothing to see
            return self.reject(sample, Reason.EMPTY_IMAGE_PRODUCED, f"{names[0]}: {w}x{h}, one flat colour")
        original = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
        if original.shape == pixels.shape and np.array_equal(original, pixels):
            return self.reject(sample, Reason.IMAGE_UNCHANGED, f"{names[0]}: the same {w}x{h} pixels as the input")
        return as_png(data), (h, w)

    def media_item(self, row_id: str, index: int, png: bytes, h: int, w: int) -> MediaItem:
        from media.sampling import image_size, tokens

        s = self.cfg.media.sampling
        height, width = image_size(h, w, s)
        return MediaItem(kind="image", uri=f"sandbox://{row_id}/{index}.png", sha256=hashlib.sha256(png).hexdigest(),
                         num_bytes=len(png), source_width=w, source_height=h, width=width, height=height,
                         visual_tokens=tokens((height, width), s.patch_size), members=[f"{row_id}.{index}.000.png"],
                         codec="png")

    @staticmethod
    def model_size_png(png: bytes, item: MediaItem) -> Optional[bytes]:
        """The image at the size the model sees it, as the media stage stores images."""
        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB")
        if img.size != (item.width, item.height):
            img = img.resize((item.width, item.height), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
