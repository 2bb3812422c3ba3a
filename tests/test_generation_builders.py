"""The mode builders end to end against the synthetic reasoner, over HTTP on loopback (the OpenAI
chat-completions protocol, through captioners.backends' client), with the sandbox's interface."""
import io

import pytest
from PIL import Image

from mixture.auto_think import AutoThinkBuilder
from mixture.builders import make_builders
from mixture.formats import format_error
from mixture.generate import Call, Generator
from mixture.non_thinking import NonThinkingBuilder
from mixture.reasoner import server
from mixture.think_with_image import ThinkWithImageBuilder
from mixture.thinking import ThinkingBuilder
from mixture.video import VideoNoThinkBuilder, VideoThinkBuilder
from schemas.config import load_config
from schemas.reasons import Reason, Stage
from schemas.rejected import Rejected
from schemas.sample import Sample
from tests.generation_util import FakeSandbox, mini_corpus

CLIENT = [f"mixture.builders.generator.openai.{k}" for k in (
    "model=synthetic-reasoner", "timeout_s=20", "max_retries=1", "backoff_base_s=0.01", "backoff_max_s=0.02",
    "concurrency=4")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    return str(root), mini_corpus(str(root))


@pytest.fixture(scope="module")
def reasoner(corpus):
    with server(corpus[0]) as s:
        yield s


def cfg_for(url, *more):
    return load_config(None, [f"mixture.builders.generator.openai.base_url={url}", *CLIENT, *more])


def run(builder, samples):
    builder.setup()
    try:
        return [builder(s) for s in samples if builder.wants(s)]
    finally:
        builder.teardown()


def kept(results):
    return [r[0] for r in results if isinstance(r, list)]


def reasons(results):
    return sorted(r.reason for r in results if isinstance(r, Rejected))


def check_rows(rows, cfg):
    for r in rows:
        assert format_error(r, cfg.mixture.builders.auto_think_suffix) is None, r.id
        Sample.from_row(r.to_row())                                           # registered scores, Arrow-able


def test_generation_is_deterministic_over_http(reasoner, corpus):
    gen = Generator(cfg_for(reasoner.base_url).mixture.builders.generator)
    s = corpus[1]["image"][0]
    image = open(s.media[0].uri, "rb").read()
    call = Call(s.id, "reason_v1", {"question": s.messages[0].content[-1].text}, [image], path_index=2)
    first, second = gen.run([call]), gen.run([call])
    gen.close()
    assert first[0].ok and first[0].text == second[0].text and "<think>" in first[0].text
    assert first[0].record.prompt_id == "reason_v1" and first[0].record.path_index == 2
    assert first[0].record.model == "openai:synthetic-reasoner"


def test_thinking_verifies_filters_and_selects(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)
    results = run(ThinkingBuilder(cfg), corpus[1]["image"] + corpus[1]["traced"] + corpus[1]["agentic"])
    rows = kept(results)
    check_rows(rows, cfg)
    got = set(reasons(results))
    assert {Reason.TOO_EASY.value, Reason.NEVER_SOLVED.value} <= got, got
    generated = [r for r in rows if r.provenance.generations]
    assert generated, "some items are solved some of the time"
    for r in generated:
        assert r.id.endswith("@think") and r.mode == "think" and r.task == "cold_start"
        assert 0 < r.scores["gen_pass_rate"] < 1 and 0 < r.scores["gen_path_score"] <= 1
        assert r.scores["gen_paths"] == cfg.mixture.builders.paths.n
        (rec,) = r.provenance.generations
        assert rec.prompt_id == "reason_v1" and rec.target == "reasoning" and rec.temperature == 0.8
        body = r.messages[-1].content[0].text
        assert body.startswith("<think>\n") and "\\boxed{" in body
        assert r.messages[0].content[-1].text.endswith(" /think")
    traced = [r for r in rows if r.id.startswith(tuple(s.id for s in corpus[1]["traced"]))]
    assert len(traced) == 2 and not any(r.provenance.generations for r in traced), "a trace needs no generation"
    for r in results:       # stats first: rejected rows carry the pass rate too
        if isinstance(r, Rejected) and r.reason in (Reason.TOO_EASY.value, Reason.NEVER_SOLVED.value):
            assert r.stage == Stage.MIXTURE.value and b'"gen_pass_rate"' in r.payload


def test_thinking_is_byte_identical_across_runs(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)

    def once():
        out = run(ThinkingBuilder(cfg), corpus[1]["image"][:6])
        return [r[0].to_json() if isinstance(r, list) else repr(r.to_row()).encode() for r in out]

    assert once() == once()


@pytest.mark.parametrize("decide_by", ["generator", "pass_rate"])
def test_auto_think_takes_both_branches(reasoner, corpus, decide_by):
    cfg = cfg_for(reasoner.base_url, f"mixture.builders.auto_think.decide_by={decide_by}")
    results = run(AutoThinkBuilder(cfg), corpus[1]["image"])
    rows = kept(results)
    check_rows(rows, cfg)
    bodies = [r.messages[-1].content[0].text for r in rows]
    assert any("/think mode is more appropriate.\n</analysis>\n<think>" in b for b in bodies)
    assert any("/no_think mode is more appropriate.\n</analysis>\n" in b and "<think>" not in b for b in bodies)
    for r in rows:
        assert r.mode == "auto_think" and not r.messages[0].content[-1].text.endswith(("/think", "/no_think"))
        assert any(g.target == "analysis" for g in r.provenance.generations)
    if decide_by == "pass_rate":
        for r in rows:
            hard = "<think>" in r.messages[-1].content[0].text
            assert (r.scores["gen_pass_rate"] < cfg.mixture.builders.auto_think.hard_pass_rate) == hard


def test_think_with_image_runs_the_code_and_adds_the_image(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)
    box = FakeSandbox()
    results = run(ThinkWithImageBuilder(cfg, sandbox=box), corpus[1]["agentic"] + corpus[1]["image"][:6])
    rows = kept(results)
    check_rows(rows, cfg)
    assert rows and box.runs >= len(rows)
    ops = " ".join(r.messages[-1].content[0].text for r in rows)
    assert "autocontrast" in ops and "rotate(" in ops, "the hand-built tasks teach contrast and rotation code"
    for r in rows:
        produced = r.media[-1]
        assert r.mode == "agentic_think" and len(r.media) == 2 and produced.uri.startswith("sandbox://")
        img = Image.open(io.BytesIO(r.blobs[produced.members[0]]))
        assert img.size == (produced.width, produced.height)
        assert produced.visual_tokens == (produced.width // 28) * (produced.height // 28) > 0
        assert all(n.startswith(r.id + ".") for n in r.blobs), "members renamed under the derived id"
        assert [g.target for g in r.provenance.generations] == ["image_code", "continuation"]


SCRIPTS = {  # the generator's image code -> the reason the builder gives
    Reason.NO_IMAGE_CODE: "I would crop it, but I will not write code.",
    "code_error": "I crop it.\n```python\nraise ValueError('bad crop')\n```",
    Reason.NO_IMAGE_PRODUCED: "I crop it.\n```python\nprint('done')\n```",
    Reason.EMPTY_IMAGE_PRODUCED: ("I crop the top edge.\n```python\nfrom PIL import Image\nimg = Image.open("
                                  "'/input/image.png')\nimg.crop((0, 0, img.width, 1)).resize((img.width, 64))"
                                  ".save('a.png')\n```"),
    Reason.IMAGE_UNCHANGED: ("I look again.\n```python\nfrom PIL import Image\nImage.open('/input/image.png')"
                             ".save('a.png')\n```"),
    Reason.IMAGE_OUT_OF_BOUNDS: ("I zoom in.\n```python\nfrom PIL import Image\nImage.open('/input/image.png')"
                                 ".crop((0, 0, 10, 10)).save('a.png')\n```"),
}


class ScriptedGenerator(Generator):
    """A generator whose image code is given (the continuation still comes from the reasoner)."""

    def __init__(self, cfg, code_text):
        super().__init__(cfg)
        self.code_text = code_text

    def run(self, calls):
        out = super().run(calls)
        for c, g in zip(calls, out):
            if c.target == "image_code":
                g.text = self.code_text
        return out


@pytest.mark.parametrize("reason", list(SCRIPTS), ids=[str(getattr(r, "value", r)) for r in SCRIPTS])
def test_think_with_image_rejects_unusable_code_and_images(reasoner, corpus, reason):
    cfg = cfg_for(reasoner.base_url)
    b = ThinkWithImageBuilder(cfg, ScriptedGenerator(cfg.mixture.builders.generator, SCRIPTS[reason]), FakeSandbox())
    (result,) = run(b, corpus[1]["agentic"][:1])
    assert isinstance(result, Rejected) and result.reason == getattr(reason, "value", reason), result.detail
    assert result.stage == "mixture"


def test_non_thinking_and_video_rows(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)
    plain = kept(run(NonThinkingBuilder(cfg), corpus[1]["image"] + corpus[1]["video"]))
    assert len(plain) == len(corpus[1]["image"]), "videos go to the video builders"
    vno = kept(run(VideoNoThinkBuilder(cfg), corpus[1]["image"] + corpus[1]["video"]))
    vthink = run(VideoThinkBuilder(cfg), corpus[1]["video"])
    check_rows(plain + vno + kept(vthink), cfg)
    assert [r.id.rsplit("@", 1)[1] for r in vno] == ["vnothink"] * 2 and all(r.mode == "no_think" for r in vno)
    generated = [r for r in kept(vthink) if r.provenance.generations]
    assert generated and generated[0].provenance.generations[0].prompt_id == "reason_video_v1", \
        "the reasoner recognised the clip from its frames and solved it"
    traced = [r for r in kept(vthink) if not r.provenance.generations]
    assert traced and traced[0].messages[-1].content[0].text.startswith("<think>\nIn the first frame")
    assert all(m.members[0].startswith(r.id) for r in vno for m in r.media)


def test_a_dead_generator_costs_each_row_not_the_run(corpus):
    with server(corpus[0], fault="500:1.0") as s:
        cfg = cfg_for(s.base_url)
        results = run(ThinkingBuilder(cfg), corpus[1]["image"][:2])
    assert reasons(results) == ["generation_failed"] * 2


def test_make_builders_follows_the_recipe(corpus):
    cfg = load_config(None, ["mixture.builders.auto_think.enabled=false"])
    cats = [b.category for b in make_builders(cfg, sandbox=FakeSandbox())]
    assert cats == ["non_thinking", "thinking", "think_with_image", "video_think", "video_no_think"]
    s = corpus[1]["image"][0]
    assert all(b.wants(s) == (b.category in ("non_thinking", "thinking", "think_with_image"))
               for b in make_builders(cfg, sandbox=FakeSandbox()))


def test_think_with_image_through_the_real_sandbox(reasoner, corpus):
    """The bubblewrap sandbox (mixture/sandbox) runs the reasoner's code; skipped where isolation is missing."""
    from mixture.sandbox import Sandbox, SandboxUnavailable

    cfg = cfg_for(reasoner.base_url)
    try:
        Sandbox.check()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    rows = kept(run(ThinkWithImageBuilder(cfg), corpus[1]["agentic"][:2]))
    check_rows(rows, cfg)
    assert rows and all(r.media[-1].uri.startswith("sandbox://") for r in rows)
    b = ThinkWithImageBuilder(cfg, ScriptedGenerator(cfg.mixture.builders.generator, "I crop.\n```python\n"
                                                     "import os\nos.system('id')\n```"))
    (result,) = run(b, corpus[1]["agentic"][:1])
    assert isinstance(result, Rejected) and result.reason == "code_forbidden"


def test_a_row_that_is_not_material_is_refused_not_raised_on(corpus):
    cfg = load_config()
    video, image = corpus[1]["video"][0], corpus[1]["image"][0]
    for b, s in [(NonThinkingBuilder(cfg), video), (VideoNoThinkBuilder(cfg), image),
                 (ThinkWithImageBuilder(cfg, sandbox=FakeSandbox()), video)]:
        assert not b.wants(s)
        out = b(s)
        assert isinstance(out, Rejected) and "not material" in out.detail


def test_the_judge_asks_the_generator_over_http(reasoner):
    cfg = cfg_for(reasoner.base_url, "mixture.builders.verify.judge=true")
    b = ThinkingBuilder(cfg)
    b.setup()
    assert b._judge("What colour?", "Red.", "red") is True and b._judge("What colour?", "Red.", "Blue.") is False
    assert b.verifier.judge is not None


def test_builders_leave_their_input_row_alone(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)
    s = corpus[1]["image"][3]
    before = s.to_json()
    for b in (ThinkingBuilder(cfg), AutoThinkBuilder(cfg)):
        run(b, [s])
    assert s.to_json() == before, "a row may go to several builders (and Beam forbids mutating inputs)"


def test_path_selection_can_group_steps_by_embedding(reasoner, corpus):
    """paths.grouping: clip_text hands select_path the builder's embed function (CLIP's text tower in
    production; here a bag-of-words stand-in, set before setup so no model loads)."""
    import numpy as np

    cfg = cfg_for(reasoner.base_url, "mixture.builders.paths.grouping=clip_text",
                  "mixture.builders.paths.step_similarity=0.99")
    b = ThinkingBuilder(cfg)
    seen = []

    def embed(steps):
        seen.extend(steps)
        words = sorted({w for s in steps for w in s.lower().split()})
        return np.array([[s.lower().split().count(w) for w in words] for s in steps], dtype=float)

    b.embed = embed
    rows = kept(run(b, corpus[1]["image"]))
    check_rows(rows, cfg)
    assert seen and any(r.provenance.generations for r in rows)


def test_generation_in_process_with_transformers(tiny_vlm, corpus):
    """backend: transformers runs the same builders on a local model (the tiny random Qwen2-VL writes
    noise, so every item is never solved: the point is the path through the in-process client)."""
    cfg = load_config(None, ["mixture.builders.generator.backend=transformers",
                             f"mixture.builders.generator.transformers.model={tiny_vlm}",
                             "mixture.builders.generator.transformers.device=cpu",
                             "mixture.builders.generator.max_new_tokens=8", "mixture.builders.paths.n=2"])
    results = run(ThinkingBuilder(cfg), corpus[1]["image"][:1])
    assert reasons(results) == ["never_solved"]
    assert b'"gen_pass_rate":0.0' in results[0].payload


def planted(s: Sample, plant: str) -> Sample:
    s = Sample.from_row(s.to_row())
    s.messages[-2].content[-1].text += f" [plant:{plant}]"
    return s


@pytest.mark.parametrize("plant,builder", [("too_easy", "thinking"), ("never_solved", "thinking"),
                                           ("repetitive_generation", "thinking"), ("bad_format", "auto_think"),
                                           ("no_image_code", "think_with_image"),
                                           ("no_image_produced", "think_with_image"),
                                           ("empty_image_produced", "think_with_image"),
                                           ("image_unchanged", "think_with_image"),
                                           ("image_out_of_bounds", "think_with_image"),
                                           ("code_error", "think_with_image")])
def test_planted_rows_get_their_reason(reasoner, corpus, plant, builder):
    """The reasoner's [plant:NAME] markers give each reason on demand (for the mixture's coverage test)."""
    cfg = cfg_for(reasoner.base_url)
    b = {"thinking": ThinkingBuilder(cfg), "auto_think": AutoThinkBuilder(cfg),
         "think_with_image": ThinkWithImageBuilder(cfg, sandbox=FakeSandbox())}[builder]
    s = planted(corpus[1]["image"][1], plant)   # an ordinary corpus question, with the marker
    (result,) = run(b, [s])
    assert isinstance(result, Rejected) and result.reason == plant, result


@pytest.mark.parametrize("plant", ["code_timeout", "code_resource_limit", "code_forbidden"])
def test_planted_code_is_contained_by_the_real_sandbox(reasoner, corpus, plant):
    from mixture.sandbox import Sandbox, SandboxUnavailable

    try:
        Sandbox.check()
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    cfg = cfg_for(reasoner.base_url, "mixture.sandbox.cpu_s=1", "mixture.sandbox.wall_s=3")
    (result,) = run(ThinkWithImageBuilder(cfg), [planted(corpus[1]["agentic"][1], plant)])
    assert isinstance(result, Rejected) and result.reason == plant, result.detail


def test_an_undecodable_picture_costs_the_row(reasoner, corpus):
    cfg = cfg_for(reasoner.base_url)
    s = Sample.from_row(corpus[1]["image"][0].to_row())
    s.media[0].members = [f"{s.id}.0.000.jpg"]
    s.blobs = {s.media[0].members[0]: b"\xff\xd8\xff not really a jpeg"[:3] + b"garbage"}
    t = Sample.from_row(s.to_row())
    t.media[0].members, t.blobs = [f"{t.id}.0.000.png"], {f"{t.id}.0.000.png": b"not an image"}
    for b in (ThinkingBuilder(cfg), AutoThinkBuilder(cfg), ThinkWithImageBuilder(cfg, sandbox=FakeSandbox())):
        for row in (s, t):
            (result,) = run(b, [row])
            assert isinstance(result, Rejected) and result.reason == "generation_failed", (b.category, result)


def test_builders_travel_to_workers(reasoner, corpus):
    """Beam pickles a stage's builders before setup() (clients, sandbox and models are made on the worker)."""
    from apache_beam.internal import pickler

    cfg = cfg_for(reasoner.base_url)
    for b in make_builders(cfg):
        clone = pickler.loads(pickler.dumps(b))
        assert type(clone) is type(b) and clone.category == b.category
    clone = pickler.loads(pickler.dumps(ThinkingBuilder(cfg)))
    (result,) = run(clone, corpus[1]["traced"][:1])
    assert isinstance(result, list) and result[0].id.endswith("@think")
