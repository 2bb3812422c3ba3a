"""Every mixture reason code (`MIXTURE_REASONS`), produced by the real mixture stage
(pipelines/mixture.py: the mode builders, the code sandbox, the gates, the shares) on the
DirectRunner: one planted row per reason. tests/test_reason_coverage.py plants every other Reason
through `curate`; together the two cover every Reason. A mixture Reason without a planted row
here fails `test_every_mixture_reason_is_planted`.

The generator is a TEST DOUBLE (`Scripted`, below): it answers each planted question with the
text that must trigger its reason (a wrong path, a loop, code that never ends, ...), through the
same `Generator.run` interface the builders use against a real endpoint. Code runs in the real
bubblewrap sandbox; where it is missing, the sandbox-only reasons are skipped.
"""
from __future__ import annotations

import pytest

from mixture import mixing
from mixture.generate import Generated
from pipelines.common import KEPT, REJECTED
from pipelines.mixture import KEPT_INPUTS, Mixture
from schemas.reasons import MIXTURE_REASONS, Reason
from schemas.sample import GenerationRecord
from tests import media_util as mu
from tests.beam_util import run_collect
from tests.conftest import make_cfg, row_context

pytestmark = pytest.mark.slow

GOOD_CODE = ("I crop the middle.\n```python\nfrom PIL import Image\nimg = Image.open('/input/image.png')\n"
             "w, h = img.size\nimg.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize((w, h)).save('crop.png')\n```")
CODE = {   # planted reason -> the image code the generator proposes
    Reason.NO_IMAGE_CODE: "I would crop it, but I will not write code.",
    Reason.CODE_ERROR: "I crop it.\n```python\nraise ValueError('bad crop')\n```",
    Reason.CODE_TIMEOUT: "I think hard.\n```python\nwhile True:\n    pass\n```",
    Reason.CODE_RESOURCE_LIMIT: "I print it.\n```python\nprint('x' * 1000000)\n```",
    Reason.CODE_FORBIDDEN: "I look around.\n```python\nimport subprocess\nsubprocess.run(['id'])\n```",
    Reason.NO_IMAGE_PRODUCED: "I crop it.\n```python\nprint('done')\n```",
    Reason.EMPTY_IMAGE_PRODUCED: ("I zoom on a corner.\n```python\nfrom PIL import Image\nimg = Image.open("
                                  "'/input/image.png')\nimg.crop((0, 0, 1, 1)).resize((img.width, img.height))"
                                  ".save('a.png')\n```"),
    Reason.IMAGE_UNCHANGED: ("I look again.\n```python\nfrom PIL import Image\nImage.open('/input/image.png')"
                             ".save('a.png')\n```"),
    Reason.IMAGE_OUT_OF_BOUNDS: ("I zoom in.\n```python\nfrom PIL import Image\nImage.open('/input/image.png')"
                                 ".crop((0, 0, 10, 10)).save('a.png')\n```"),
}
SANDBOX_ONLY = {Reason.CODE_RESOURCE_LIMIT, Reason.CODE_FORBIDDEN}
RIGHT = "<think>I count the shapes one by one, left to right, and find seven of them.</think><answer>7</answer>"
WRONG = "<think>I count the shapes one by one, left to right, and find three of them.</think><answer>3</answer>"
# planted reason -> what the row is (every one but no_mode is a QA row whose reference answer is "7.")
PLANTED = {
    **{r: "a QA row whose image code triggers it in the think-with-image builder" for r in CODE},
    Reason.GENERATION_FAILED: "every request for the row fails",
    Reason.NEVER_SOLVED: "every path answers 3",
    Reason.TOO_EASY: "every path answers 7",
    Reason.REPETITIVE_GENERATION: "every path loops",
    Reason.BAD_FORMAT: "the auto-think analysis chooses no mode",
    Reason.NO_MODE: "a caption pair: no question, no builder wants it",
    Reason.OVER_SHARE: "non-thinking rows beyond their share (thinking: only the 'ok' row)",
}


class Scripted:
    """TEST DOUBLE of mixture.generate.Generator: scripted answers keyed by a tag in the question."""

    model_id = "scripted"

    def setup(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run(self, calls):
        return [self.one(c) for c in calls]

    def one(self, call):
        rec = GenerationRecord(backend="openai", model=self.model_id, prompt_id=call.prompt_id, temperature=0.0,
                               max_new_tokens=64, seed=call.path_index, path_index=call.path_index, target=call.target)
        plant = call.values.get("question", "").split("]")[0].lstrip("[")
        if plant == Reason.GENERATION_FAILED.value:
            return Generated(None, "scripted: the endpoint is down", rec)
        if call.target == "image_code":
            return Generated(CODE.get(Reason(plant) if plant in Reason._value2member_map_ else None, GOOD_CODE),
                             None, rec)
        if call.target == "analysis":
            text = ("I am not sure what this needs." if plant == Reason.BAD_FORMAT.value else
                    "Counting several shapes takes care, therefore /think mode is more appropriate.")
            return Generated(text, None, rec)
        if plant == Reason.NEVER_SOLVED.value:
            return Generated(WRONG, None, rec)
        if plant == Reason.TOO_EASY.value:
            return Generated(RIGHT, None, rec)
        if plant == Reason.REPETITIVE_GENERATION.value:
            return Generated("<think>" + "again and again and " * 80 + "</think><answer>7</answer>", None, rec)
        return Generated(WRONG if call.path_index == 3 else RIGHT, None, rec)   # pass rate 0.75: kept


def _sandbox():
    """None: the builder makes the real bubblewrap sandbox; the test fake where bwrap cannot confine."""
    from mixture.sandbox import Sandbox, SandboxUnavailable

    try:
        Sandbox.check()
        return None, set()
    except SandboxUnavailable:
        from tests.generation_util import FakeSandbox

        return FakeSandbox(timeout_s=5), SANDBOX_ONLY


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from schemas.input import normalize_row

    root = tmp_path_factory.mktemp("mixture_reasons")
    (root / "a.png").write_bytes(mu.image_bytes(mu.quadrant_image(128, 192)))
    rows = {"caption": {"image": "a.png", "caption": "four coloured quadrants"}}
    for name in [r.value for r in PLANTED if r not in (Reason.NO_MODE, Reason.OVER_SHARE)] + ["ok"]:
        rows[name] = {"image": "a.png", "question": f"[{name}] How many shapes are there?", "answer": "7."}
    samples = [normalize_row(payload, row_context(str(root), source_ref=name)) for name, payload in rows.items()]
    cfg = make_cfg("mixture.shares.targets={non_thinking: 1, thinking: 1}", "mixture.builders.paths.n=4",
                   "mixture.builders.video.enabled=false",
                   "mixture.mixing.upsample=[{score: gen_pass_rate, min: 0.7, repeats: 2}]")
    sandbox, skipped = _sandbox()
    out = run_collect(samples, lambda pc: (lambda o: {"kept": o[KEPT], "rejected": o[REJECTED],
                                                       "kept_inputs": o[KEPT_INPUTS]})(
        pc | Mixture(cfg, generator=Scripted(), sandbox=sandbox)))
    return {s.id: name for s, name in zip(samples, rows)}, out, skipped


def test_every_mixture_reason_is_planted():
    assert set(PLANTED) == set(MIXTURE_REASONS)


def test_each_planted_row_gets_its_reason(planted):
    names, out, skipped = planted
    got: dict[str, set] = {}
    for r in out["rejected"]:
        got.setdefault(names[mixing.root_id(r.id)], set()).add((r.stage, r.reason))
    for reason in set(PLANTED) - skipped - {Reason.OVER_SHARE}:
        row = "caption" if reason is Reason.NO_MODE else reason.value
        assert ("mixture", reason.value) in got.get(row, set()), (reason, got)
    over = [r for r in out["rejected"] if r.reason == Reason.OVER_SHARE.value]
    assert all(mixing.is_derived(r.id) or r.detail.startswith("all ") for r in over)   # or settled inputs
    assert [r for r in over if r.id.endswith("@nothink")] and [r for r in over if r.id.endswith("@auto")]  # target 0
    assert [r for r in out["rejected"] if not r.detail] == []


def test_inputs_settle_exactly_once(planted):
    names, out, _ = planted
    kept_inputs = set(out["kept_inputs"])
    assert kept_inputs == {mixing.root_id(s.id) for s in out["kept"]}
    input_level = [r for r in out["rejected"] if not mixing.is_derived(r.id)]
    assert len({r.id for r in input_level}) == len(input_level)
    assert kept_inputs | {r.id for r in input_level} == set(names) and not kept_inputs & {r.id for r in input_level}
    assert {mixing.category_of(s) for s in out["kept"]} == {"non_thinking", "thinking"}
    think = sorted(s.id for s in out["kept"] if mixing.category_of(s) == "thinking")   # pass rate 0.75: twice
    assert think and think[1::2] == [i + "@r2" for i in think[0::2]]
