"""Training runs: a killed run resumes exactly, DDP with 2 processes equals one process with the same
global batch, and the checkpoints serve `trainer.generate` and the `trainer` recaption backend."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch

from schemas.train import load_train_config
from tests.conftest import ROOT, free_port, make_cfg
from trainer.checkpoint import latest
from trainer.train import KILL_ENV, train

SMALL = ["data.pack_length=512", "data.pack_buffer=16", "data.shuffle_buffer=16", "run.tensorboard=false",
         "run.log_every=1", "run.progress=never", "optim.warmup_steps=2"]


def env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT, **extra}


def cli(data, out, *sets, launcher=(sys.executable, "-m", "trainer.train"), **extra):
    cmd = [*launcher, "--data", str(data), "--output", str(out)]
    for s in [*SMALL, *sets]:
        cmd += ["--set", s]
    return subprocess.run(cmd, env=env(**extra), cwd=ROOT, capture_output=True, text=True, timeout=600)


def losses(run_dir) -> dict[int, float]:
    out = {}
    for line in open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8"):
        rec = json.loads(line)
        out[rec["step"]] = rec["loss"]      # a resumed run logs its steps again: the last line wins
    return out


@pytest.mark.slow
def test_a_killed_run_resumes_exactly(trainer_data, tmp_path):
    data = trainer_data[0]
    steps = ["optim.max_steps=4", "run.checkpoint_every=2"]
    full = cli(data, tmp_path / "full", *steps)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = cli(data, tmp_path / "run", *steps, **{KILL_ENV: "3"})
    assert killed.returncode == -9                          # SIGKILL after step 3, mid-run
    assert latest(str(tmp_path / "run")).endswith("step-000002")
    assert max(losses(tmp_path / "run")) == 3
    resumed = cli(data, tmp_path / "run", *steps)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '"resume": ' in resumed.stderr and "step-000002" in resumed.stderr
    assert losses(tmp_path / "run") == losses(tmp_path / "full")     # bit for bit


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(trainer_data, tmp_path):
    data = trainer_data[0]
    sets = ["optim.max_steps=3", "data.streams=2"]   # the tiny recipe scales vision.* lr: names must match under DDP too
    ddp = cli(data, tmp_path / "ddp", *sets, launcher=(sys.executable, "-m", "torch.distributed.run",
                                                        "--nproc_per_node", "2", "--master_port", str(free_port()),
                                                        "-m", "trainer.train"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = cli(data, tmp_path / "one", *sets, "optim.grad_accum=2")
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert sorted(a) == [1, 2, 3] and all(abs(a[k] - b[k]) < 1e-5 * abs(b[k]) for k in a), (a, b)


def test_an_init_checkpoint_without_the_datas_token_ids_is_an_error(trainer_data, tmp_path):
    """A tiny model's vocabulary subset comes from its first stage's data; a later stage whose data uses
    other ids would read another token's row for them, silently (a curriculum's folders differ)."""
    from keye.tokenizer import KEYE_SPECIAL_TOKENS, load_tokenizer
    from trainer.model import build_model, save_weights

    cfg = load_train_config(None, [*SMALL, "optim.max_steps=1"])
    tok = load_tokenizer(cfg.model.tokenizer)
    few = sorted({*KEYE_SPECIAL_TOKENS.values(), *tok.encode(" a red circle")})
    save_weights(build_model(cfg.model, tok, "cpu", 0, few), str(tmp_path / "init"), cfg.model.tokenizer,
                 cfg.model.merge)
    cfg = load_train_config(None, [*SMALL, "optim.max_steps=1", f"model.init={tmp_path / 'init'}"])
    with pytest.raises(ValueError, match="token ids outside"):
        train(cfg, str(tmp_path / "run"), [(str(trainer_data[0]), 1.0)])
    assert not os.path.exists(tmp_path / "run" / "log.jsonl")


@pytest.fixture(scope="module")
def checkpoint(trainer_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("trainer_run")
    cfg = load_train_config(None, [*SMALL, "optim.max_steps=2", "run.checkpoint_every=2"])
    records = train(cfg, str(run), [(str(trainer_data[0]), 1.0)])
    assert [r["step"] for r in records] == [1, 2] and all(r["packing_efficiency"] > 0.9 for r in records)
    assert os.path.exists(run / "log.jsonl")
    return latest(str(run))


def corpus_file(corpus, kind):
    folder = corpus / "media" / ("images" if kind == "image" else "videos")
    name = "cap_0000.png" if kind == "image" else "vid_0001.mp4"
    return str(folder / name)


def test_generate_cli_answers_about_an_image_and_a_video(checkpoint, trainer_data, capsys):
    from trainer.generate import main

    for kind in ("image", "video"):
        assert main(["--checkpoint", checkpoint, f"--{kind}", corpus_file(trainer_data[1], kind),
                     "--prompt", "What is shown?", "--max-new-tokens", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert torch.is_grad_enabled()          # the CLI's no-grad is scoped: in-process callers still train


def test_trainer_recaption_backend(checkpoint, trainer_data):
    from PIL import Image

    from captioners.backends import CaptionRequest, make_backend

    cfg = make_cfg("recaption.backend=trainer", f"recaption.trainer.checkpoint={checkpoint}",
                   "recaption.trainer.device=cpu", "recaption.max_new_tokens=4").recaption
    backend = make_backend(cfg)
    assert backend.captioner_id == f"trainer:{checkpoint}"
    img = Image.open(corpus_file(trainer_data[1], "image")).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    jpeg = buf.getvalue()
    results = backend.caption([CaptionRequest("a", "p", "Describe the image.", [jpeg], 1),
                               CaptionRequest("b", "p", "Describe the video.", [jpeg] * 4, 2, fps=2.0),
                               CaptionRequest("c", "p", "broken", [b"not a jpeg"], 3)])
    assert len(results) == 3
    assert all(r.ok or r.error == "empty generation" for r in results[:2]), [r.error for r in results]
    assert not results[2].ok and "Error" in results[2].error
    # curation workers on other backends never import the trainer
    probe = subprocess.run([sys.executable, "-c", "import sys, captioners.backends; "
                            "sys.exit('trainer' in sys.modules or 'trainer.recaption' in sys.modules)"],
                           env=env(), cwd=ROOT)
    assert probe.returncode == 0


def test_the_trainer_never_imports_beam():
    probe = subprocess.run([sys.executable, "-c", "import sys, trainer.train, trainer.generate, trainer.recaption, "
                            "trainer.evidence; sys.exit('apache_beam' in sys.modules or 'pipelines' in sys.modules)"],
                           env=env(), cwd=ROOT)
    assert probe.returncode == 0
