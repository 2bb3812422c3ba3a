"""The five-mode cold-start mixture (Keye-VL Phase II), Beam-free. `pipelines/mixture.py` is the thin
Beam composite over it.

    base.py            the ModeBuilder contract, derived ids, CATEGORIES
    builders.py        make_builders(cfg): the enabled builders, in CATEGORIES order
    common.py          what the builders share: QA rows, derived rows, sampling and judging paths
    non_thinking.py thinking.py auto_think.py think_with_image.py video.py    one builder per mode
    formats.py         the exact formats and the validator every row passes (format_error)
    verify.py          the answer verifier (rules, optional judge)
    paths.py           Keye's path selection (the most commonly traversed correct path)
    repetition.py      the repetition gate on generated text
    generate.py        the generator client over captioners.backends, versioned prompts (prompts/)
    reasoner.py        THE SYNTHETIC REASONER: a deterministic test double for the generator model
    sandbox/           the bubblewrap code sandbox for think-with-image code
    variants.py        every built video row at 16 and 32 frames, re-fetched from its uri
    mixing.py          categories, seeded ranks, quotas scaled to the data, the exact rank cutoff, upsampling
    export.py          kept rows in ms-swift and LLaVA layouts (pipelines/export.py runs it per shard)
"""
