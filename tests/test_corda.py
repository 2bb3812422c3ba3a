"""CorDA / CorDA++ adapters (trainer/corda/): exact initialisation, the spanned directions, parity with
PEFT's preprocess_corda, the allocators' budget, the selection rule, PEFT round trips, collection."""
from __future__ import annotations

import copy

import pytest
import torch

from tests.corda_util import batches, collate, lm_config, sequences, tiny_qwen3
from trainer.corda import allocate
from trainer.corda.adapter import attach, find_targets, plan
from trainer.corda.covariance import collect_covariances
from trainer.corda.decompose import co_svd, condition, weight_matrix
from trainer.corda.metric import Spectrum, energy_score
from trainer.corda.select import by_key, select, subsets

PROBE = torch.randint(0, 96, (3, 20), generator=torch.Generator().manual_seed(7))


def logits(model):
    with torch.no_grad():
        return model(input_ids=PROBE).logits


def rel(a, b):
    return float((a - b).norm() / b.norm())


def lora_parts(peft_model, name):
    layer = dict(peft_model.base_model.model.named_modules())[name]
    return (layer.base_layer.weight.data, layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data,
            layer.scaling["default"])


@pytest.mark.parametrize("over", [
    dict(mode="ipm"), dict(mode="kpm"),
    dict(mode="kpm", selection="subsets", num_subsets=2, allocation="greedy", min_tokens_per_dim=0.0),
    dict(mode="ipm", allocation="global_rank", alpha=2.0),
    dict(mode="ipm", selection="subsets", num_subsets=2, metric="pi", score_on="pooled", min_tokens_per_dim=0.0),
    dict(mode="kpm", covariance="identity", allocation="greedy"),
])
def test_init_output_equals_base_and_residual_plus_adapter_is_w(over):
    base = tiny_qwen3()
    seqs = sequences(48)
    model = copy.deepcopy(base)
    cfg = lm_config(rank=4, **over)
    cands = {k: batches(v, 8) for k, v in subsets(seqs, 2).items()} if over.get("selection") else \
        {"all": batches(seqs, 8)}
    p = plan(model, cfg, cands)
    pm = attach(model, p)
    assert rel(logits(pm), logits(base)) <= 1e-5
    originals = dict(base.named_modules())
    for name in p.eigens:
        w_res, a, b, scale = lora_parts(pm, name)
        torch.testing.assert_close(w_res + scale * b @ a, originals[name].weight.data, rtol=0, atol=2e-6)
    assert p.report["realised_params"] == p.report["trainable_params"] <= p.report["budget"]


def _subspace_residual(basis, vectors):
    """‖(I − QQᵀ)X‖ / ‖X‖: how far `vectors`' columns are from span(basis)."""
    q, _ = torch.linalg.qr(basis)
    return float((vectors - q @ (q.T @ vectors)).norm() / vectors.norm())


@pytest.mark.parametrize("mode", ["ipm", "kpm"])
def test_adapters_span_top_or_bottom_directions_of_wc(mode):
    model = tiny_qwen3()
    seqs = sequences(48)
    r = 5
    p = plan(model, lm_config(rank=r, mode=mode), {"all": batches(seqs, 8)})
    targets = find_targets(model, [r".*\.mlp\.down_proj"])
    covs = collect_covariances(model, targets, batches(seqs, 8)())
    pm = attach(model, p)
    for name in targets:
        cond = condition(covs.of(name).double(), dtype=torch.float64)
        w = weight_matrix(dict(tiny_qwen3().named_modules())[name]).double()
        u, s, vh = torch.linalg.svd(w @ cond.cov_fix)
        sl = slice(0, r) if mode == "ipm" else slice(len(s) - r, len(s))
        other = slice(r, len(s)) if mode == "ipm" else slice(0, len(s) - r)
        _, a, b, _ = lora_parts(pm, name)
        a, b = a.double(), b.double()
        assert _subspace_residual(u[:, sl], b) < 1e-4                       # B spans the chosen left vectors
        assert _subspace_residual(vh[sl].T, (a @ cond.cov_fix).T) < 1e-4    # A·C spans the chosen right vectors
        assert _subspace_residual(u[:, other], b) > 0.9                     # ... and not the others


@pytest.mark.parametrize("mode", ["ipm", "kpm"])
def test_matches_peft_preprocess_corda_up_to_sign(mode):
    """One covariance, fixed rank: our batched, padded collection (batch 6) equals PEFT's batch-1 hooks."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora.config import CordaConfig as PeftCorda
    from peft.tuners.lora.corda import preprocess_corda
    seqs = sequences(60, lo=16, hi=28)
    ours = tiny_qwen3()
    p = plan(ours, lm_config(rank=4, mode=mode, normalize="peft_max", use_label_mask=False),
             {"all": batches(seqs, 6)})
    ours = attach(ours, p)
    theirs = tiny_qwen3()
    names = sorted(p.eigens)
    cfg = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"],
                     init_lora_weights="corda", corda_config=PeftCorda(corda_method=mode))

    def run_model():
        for s in seqs:
            theirs(input_ids=s[None])
    preprocess_corda(theirs, cfg, run_model=run_model)
    theirs = get_peft_model(theirs, cfg)
    for name in names:
        w1, a1, b1, s1 = lora_parts(ours, name)
        w2, a2, b2, s2 = lora_parts(theirs, name)
        assert s1 == s2
        sign = torch.sign((b1 * b2).sum(dim=0))                      # per component
        torch.testing.assert_close(b1 * sign, b2, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(a1 * sign[:, None], a2, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(w1, w2, rtol=1e-3, atol=1e-5)


def test_allocators_never_exceed_budget_and_follow_the_metric():
    g = torch.Generator().manual_seed(0)
    slots = {}
    for i in range(12):
        d_in, d_out = [int(x) for x in torch.randint(4, 40, (2,), generator=g)]
        e = torch.rand(min(d_in, d_out), generator=g).sort(descending=True).values
        slots[f"l{i}"] = allocate.LayerSlot(d_in, d_out, tuple((e / e.sum()).tolist()))
    for budget in (200, 777, 1500, 5000, 10**6):
        for fn in (allocate.greedy, allocate.global_rank):
            ranks = fn(slots, budget, min_rank=0)
            assert allocate.parameters(ranks, slots) <= budget
            assert all(0 <= ranks[n] <= s.k for n, s in slots.items())
    with pytest.raises(ValueError):
        allocate.greedy(slots, 10, min_rank=1)
    # Two layers of equal cost: the one whose energy is concentrated gets no more than it needs.
    two = {"flat": allocate.LayerSlot(8, 8, (0.125,) * 8), "peaked": allocate.LayerSlot(8, 8, (0.9, 0.1) + (0.0,) * 6)}
    assert allocate.greedy(two, 16 * 4, min_rank=0) == {"flat": 3, "peaked": 1}
    # Cost matters to greedy (value per parameter), not to the EVA-style global ranking.
    cost = {"cheap": allocate.LayerSlot(2, 2, (0.3,) * 2), "dear": allocate.LayerSlot(50, 50, (0.5, 0.5))}
    assert allocate.greedy(cost, 104, min_rank=0) == {"cheap": 2, "dear": 0}
    assert allocate.global_rank(cost, 104, min_rank=0) == {"cheap": 1, "dear": 1}


@pytest.mark.parametrize("score_on", ["own", "pooled"])
def test_selection_picks_the_candidate_the_metric_prefers(score_on):
    from trainer.corda.decompose import component_energy
    model = tiny_qwen3()
    targets = find_targets(model, [r".*\.self_attn\.(q|o)_proj"])
    cands_data = {"narrow": sequences(40, seed=1, tokens=range(6)), "wide": sequences(40, seed=2),
                  "tiny": sequences(1, seed=3, lo=4, hi=4)}
    cands = {k: batches(v, 8) for k, v in cands_data.items()}
    choices = select(model, targets, cands, rank=3, mode="ipm", min_tokens_per_dim=1.0, score_on=score_on)
    pooled = collect_covariances(model, targets, (b for c in cands.values() for b in c()))
    for name, c in choices.items():
        eligible = {k: v for k, v in c.scores.items() if c.tokens[k] >= 32}
        assert set(eligible) == {"narrow", "wide"}                # 'tiny' saw 4 tokens < d_in
        assert c.candidate == max(eligible, key=eligible.get)
        assert not c.fallback
        for cand in eligible:                                     # the reported score is the metric's
            cov = collect_covariances(model, {name: targets[name]}, cands[cand]())
            w = weight_matrix(targets[name])
            cond = condition(cov.of(name))
            u, s, _ = co_svd(w, cond)
            on = cond.cov_fix if score_on == "own" else pooled.of(name)
            spec = Spectrum(s, component_energy(w, u, on), w.shape[1], w.shape[0], 0)
            assert energy_score(spec, 3, "ipm") == pytest.approx(c.scores[cand], rel=1e-4)
    assert by_key([{"mode": "b"}, {"mode": "a"}, {"mode": "b"}], lambda s: s["mode"]) == \
        {"a": [{"mode": "a"}], "b": [{"mode": "b"}, {"mode": "b"}]}


def test_energy_metric_is_scale_invariant_and_exact():
    model = tiny_qwen3()
    seqs = sequences(40)
    name, module = next(iter(find_targets(model, [r".*\.0\.mlp\.down_proj"]).items()))
    cov = collect_covariances(model, {name: module}, batches(seqs, 8)()).of(name).double()
    w = weight_matrix(module).double()
    from trainer.corda.decompose import component_energy
    scores = []
    for a in (1.0, 1e-3, 250.0):
        cond = condition(cov * a, dtype=torch.float64)
        u, s, vh = co_svd(w, cond, torch.float64)
        e = component_energy(w, u, cond.cov_fix, torch.float64)
        assert float(e.sum()) == pytest.approx(float(torch.trace(w @ cond.cov_fix @ w.T)), rel=1e-9)
        r = 6                            # energy lost by truncation = ‖(W − Ŵ_r) C_fix^{1/2}‖²
        vt = torch.cholesky_solve(vh[:r].T, cond.chol).T
        err = w - u[:, :r] @ torch.diag(s[:r]) @ vt
        assert float(e[r:].sum()) == pytest.approx(float(torch.trace(err @ cond.cov_fix @ err.T)), rel=1e-6)
        scores.append(energy_score(Spectrum(s, e, w.shape[1], w.shape[0], 0), r, "ipm"))
    assert scores[1] == pytest.approx(scores[0], rel=1e-9) and scores[2] == pytest.approx(scores[0], rel=1e-9)


def test_save_reload_and_convert_to_plain_lora(tmp_path):
    from peft import PeftModel
    base = tiny_qwen3()
    model = copy.deepcopy(base)
    p = plan(model, lm_config(rank=3, mode="ipm", allocation="greedy"), {"all": batches(sequences(40), 8)})
    pm = attach(model, p)
    init_dir = tmp_path / "corda_init"
    pm.peft_config["default"].init_lora_weights = True
    pm.save_pretrained(str(init_dir))
    # one "training" step: move every adapter weight
    with torch.no_grad():
        for n, prm in pm.named_parameters():
            if "lora_" in n:
                prm.add_(0.01 * torch.randn_like(prm))
    trained = logits(pm)
    pm.save_pretrained(str(tmp_path / "lora"), path_initial_model_for_weight_conversion=str(init_dir))
    plain = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "lora"))
    assert rel(logits(plain), trained) < 1e-5
    ranks = plain.peft_config["default"].rank_pattern
    assert sorted(ranks.values()) == sorted(2 * r for r in p.ranks.values() if r > 0)
    merged = plain.merge_and_unload()
    assert rel(logits(merged), trained) < 1e-5
    # the CorDA adapter itself reloads onto the residual model
    residual = copy.deepcopy(base)
    res_state = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                 for k, v in pm.state_dict().items() if "lora_" not in k}
    residual.load_state_dict(res_state)
    pm.save_pretrained(str(tmp_path / "corda_trained"))
    again = PeftModel.from_pretrained(residual, str(tmp_path / "corda_trained"))
    assert rel(logits(again), trained) < 1e-5


def test_collection_batching_masks_and_shared_inputs():
    model = tiny_qwen3()
    seqs = sequences(12)
    targets = find_targets(model, [r".*_proj"])
    one = collect_covariances(model, targets, batches(seqs, 1)(), use_label_mask=False)
    many = collect_covariances(model, targets, batches(seqs, 5)(), use_label_mask=False, dtype=torch.float64,
                               offload=True)
    assert one.tokens == many.tokens
    for g in one.cov:
        torch.testing.assert_close(many.cov[g].float(), one.cov[g], rtol=1e-4, atol=1e-6)
    groups = {}
    for name, leader in one.group_of.items():
        groups.setdefault(leader, set()).add(name.rsplit(".", 1)[-1])
    assert sorted(sorted(v) for v in groups.values()) == sorted(
        [["k_proj", "q_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]] * 2)
    # label mask: only positions that predict a supervised token (here, after the first 5)
    masked = collect_covariances(model, targets, batches(seqs, 4, supervise_from=5)(), use_label_mask=True)
    assert all(masked.tokens[g] == sum(len(s) - 5 for s in seqs) for g in masked.cov)
    # fully masked data is an error naming the problem, not a silent zero covariance
    empty = [collate([s], supervise_from=len(s)) for s in seqs[:2]]
    with pytest.raises(ValueError, match="no calibration tokens"):
        collect_covariances(model, targets, iter(empty), use_label_mask=True)
    assert collect_covariances(model, targets, iter(empty), use_label_mask=True, strict=False).cov == {}


def test_pissa_special_case_equals_peft_pissa():
    from peft import LoraConfig, get_peft_model
    ours = tiny_qwen3()
    p = plan(ours, lm_config(rank=4, covariance="identity"), {})
    ours = attach(ours, p)
    theirs = get_peft_model(tiny_qwen3(), LoraConfig(r=4, lora_alpha=4, init_lora_weights="pissa",
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                     "gate_proj", "up_proj", "down_proj"]))
    for name in p.eigens:
        w1, a1, b1, _ = lora_parts(ours, name)
        w2, a2, b2, _ = lora_parts(theirs, name)
        torch.testing.assert_close(b1 @ a1, b2 @ a2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(w1, w2, rtol=1e-4, atol=1e-5)


def test_damping_is_capped_and_config_is_strict():
    rank1 = torch.ones(16, 1) @ torch.ones(1, 16)                         # rank-1 covariance
    cond = condition(rank1, max_condition=10.0, max_iters=3)
    assert cond.capped and cond.iters == 3
    ok = condition(rank1, max_condition=1e6)
    assert not ok.capped and ok.damp == pytest.approx(0.01)
    from schemas.config import ConfigError
    with pytest.raises(ConfigError, match="unknown key"):
        lm_config(rnak=3)
    with pytest.raises(ConfigError):
        lm_config(mode="both")


def test_any_causal_lm_gpt2_conv1d():
    """transformers' Conv1D layers (GPT-2, weights stored (in, out)) work like nn.Linear."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    model = copy.deepcopy(base)
    p = plan(model, lm_config(rank=4, mode="kpm", target_modules=[r".*\.(c_attn|c_proj|c_fc)"], allocation="greedy"),
             {"all": batches(sequences(40), 8)})
    pm = attach(model, p)
    assert rel(logits(pm), logits(base)) <= 1e-5
    assert p.report["realised_params"] == p.report["trainable_params"] <= p.report["budget"]


def test_peft_cache_file_round_trip(tmp_path):
    """`save_cache` writes PEFT's CordaConfig.cache_file: preprocess_corda + get_peft_model rebuild our adapters."""
    from peft import get_peft_model
    from peft.tuners.lora.corda import preprocess_corda

    from trainer.corda.adapter import lora_config, save_cache
    ours = tiny_qwen3()
    p = plan(ours, lm_config(rank=3, mode="kpm", allocation="greedy"), {"all": batches(sequences(40), 8)})
    save_cache(p, str(tmp_path / "cache.pt"))
    ours = attach(ours, p)
    cfg = lora_config(p)
    cfg.corda_config.cache_file = str(tmp_path / "cache.pt")
    theirs = tiny_qwen3()
    preprocess_corda(theirs, cfg)
    theirs = get_peft_model(theirs, cfg)
    for name in p.eigens:
        for x, y in zip(lora_parts(ours, name), lora_parts(theirs, name)):
            torch.testing.assert_close(x, y)
