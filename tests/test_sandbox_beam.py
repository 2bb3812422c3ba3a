"""The sandbox inside a Beam pipeline: hostile rows cost one row each, the run goes on."""
import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from mixture.sandbox import Sandbox
from tests.test_sandbox import ATTACK_LIMITS, BENIGN, _png, require_bwrap


class RunSnippet(beam.DoFn):
    """One sandbox per worker (pickled with the DoFn, probed once in setup), one result per row."""

    def __init__(self, box: Sandbox):
        self.box = box

    def setup(self):
        self.box.setup()

    def process(self, item):
        key, code = item
        res = self.box.run(code, {"image.png": _png()})
        yield key, res.reason, sorted(res.files)


def test_attacks_in_a_beam_pipeline_cost_one_row_each():
    require_bwrap()
    rows = [("crop", BENIGN["pil_crop"]), ("fork", "import os\nos.fork()"), ("bomb", "x = bytearray(1 << 31)"),
            ("bypass", "[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
                       ".__init__.__globals__['fork']()")]
    with beam.Pipeline() as p:
        out = p | beam.Create(rows) | beam.ParDo(RunSnippet(Sandbox(ATTACK_LIMITS)))
        assert_that(out, equal_to([("crop", None, ["out.png"]), ("fork", "code_forbidden", []),
                                   ("bomb", "code_resource_limit", []), ("bypass", "code_forbidden", [])]))
