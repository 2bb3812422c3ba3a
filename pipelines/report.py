"""The run report: DIR/report.html, from the output alone (no recomputation).

    python -m pipelines.report DIR                       # (re)write DIR/report.html
    python -m pipelines.report DIR --what-if media.quality.min_sharpness=30 text.min_chars=20

    manifest.json ─ totals, counters, recipe ─────────────▶ funnel per stage, rejections by reason
    shards.parquet ─▶ parquet/ (kept rows: scores, media, tokens) ─┐
                      rejected/ (stage, reason, the row's JSON) ───┼▶ score histograms + thresholds,
                      wds/ (frames, for thumbnails)  ──────────────┘  tokens, durations, resolutions,
                                                                      gallery (thumbnails, captions)

Totals and the funnel are exact (the manifest's). Distributions come from at most `--max_rows`
rows read from shards spread evenly over the index, so the report of a 600B-token run reads a
bounded sample; the page says how many rows it saw. `--what-if` scans the `scores` column of
every shard (and the stored rows of rejected ones) and prints how many rows would pass each
threshold, and all of them together, instead of the configured values: the payoff of storing
stats on kept and rejected rows alike. One self-contained HTML file: charts are matplotlib PNGs
and thumbnails JPEGs, embedded as data URLs; no script, no network.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import html
import io
import json
import math
import posixpath
import sys
import tarfile
from typing import Any, Iterable, Optional

import pyarrow.parquet as pq

from schemas.manifest import Manifest
from schemas.reasons import Reason, Stage
from schemas.scores import SCORE_DOCS

REPORT_FILE = "report.html"
# recipe key -> (score it thresholds, the comparison a row must pass)
THRESHOLDS: dict[str, tuple[str, str]] = {
    "text.min_chars": ("text_chars", ">="),
    "text.max_chars": ("text_chars", "<="),
    "text.max_dup_ngram_ratio": ("text_dup_ngram_ratio", "<="),
    "text.max_dup_line_ratio": ("text_dup_line_ratio", "<="),
    "media.quality.min_side_px": ("media_min_side_px", ">="),
    "media.quality.min_duration_s": ("media_min_duration_s", ">="),
    "media.quality.min_brightness": ("media_min_brightness", ">="),
    "media.quality.max_brightness": ("media_max_brightness", "<="),
    "media.quality.min_sharpness": ("media_min_sharpness", ">="),
    "media.quality.min_motion": ("media_min_motion", ">="),
    "media.sampling.max_aspect_ratio": ("media_max_aspect_ratio", "<="),
    "decontaminate.phash.threshold": ("benchmark_phash_jaccard", "<="),
}
# A what-if key that is no recipe key: an absolute CLIP threshold instead of score.rules.
CLIP_WHAT_IF = {"score.clip_min": ("clip_score", ">=")}
# Rejected for media the decoders choke on: no thumbnail is attempted (the pipeline decodes in
# isolated subprocesses; the report must not crash or hang on the same bytes in its own process).
BROKEN_MEDIA = {r.value for r in (Reason.MEDIA_TOO_LARGE, Reason.NOT_A_VIDEO, Reason.NOT_AN_IMAGE, Reason.NO_VIDEO_STREAM,
                                  Reason.TRUNCATED_MEDIA, Reason.UNDECODABLE, Reason.TOO_MANY_PIXELS,
                                  Reason.VIDEO_TOO_LONG, Reason.DECODE_TIMEOUT, Reason.DECODER_CRASHED)}


@dataclasses.dataclass
class Row:
    """What the report needs of one kept or rejected row."""
    kept: bool
    id: str
    source: str
    task: Optional[str]
    mode: Optional[str]
    scores: dict[str, float]
    media: list[dict]
    text_tokens: int = 0
    visual_tokens: int = 0
    stage: str = ""
    reason: str = ""
    detail: str = ""
    caption: str = ""
    alternatives: list[dict] = dataclasses.field(default_factory=list)
    shard: str = ""


# --- reading ---------------------------------------------------------------------------------
def _open(out_dir: str, rel: str):
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(FileSystems.join(out_dir, rel))


def _caption(messages: list[dict]) -> str:
    for m in messages or []:
        if m.get("role") == "assistant":
            return " ".join(p.get("text") or "" for p in m.get("content") or [] if p.get("type") == "text")
    return ""


def _from_sample_row(d: dict, kept: bool, shard: str = "") -> Row:
    return Row(kept=kept, id=d.get("id") or "", source=d.get("source") or "", task=d.get("task"),
               mode=d.get("mode"), scores={k: v for k, v in (d.get("scores") or {}).items() if v is not None},
               media=list(d.get("media") or []), text_tokens=d.get("text_tokens") or 0,
               visual_tokens=d.get("visual_tokens") or 0, caption=_caption(d.get("messages")),
               alternatives=list(d.get("alternatives") or []), shard=shard)


def _from_rejected(r: dict) -> Row:
    row = None
    if r.get("payload") and r["stage"] not in (Stage.INGEST.value, Stage.VALIDATE.value):
        try:   # past validation the payload is the Sample's JSON, with the stats measured so far
            row = _from_sample_row(json.loads(r["payload"]), kept=False)
        except (ValueError, TypeError, AttributeError):
            row = None
    row = row or Row(kept=False, id=r.get("id") or "", source=r["source"], task=None, mode=None, scores={}, media=[])
    row.stage, row.reason, row.detail = r["stage"], r["reason"], r.get("detail") or ""
    row.source = r["source"]
    return row


def _spread(items: list, n: int) -> list:
    """n items spread evenly over the list (all when it is shorter)."""
    if len(items) <= n:
        return list(items)
    return [items[math.floor(k * len(items) / n)] for k in range(n)]


def read_rows(out_dir: str, manifest: Manifest, max_rows: int) -> tuple[list[Row], int]:
    """Kept and rejected rows from shards spread over the index, about max_rows in all; also the
    number of shards read."""
    rows: list[Row] = []
    read = 0
    for kind, kept in (("parquet", True), ("rejected", False)):
        shards = manifest.shards.get(kind, [])
        total = sum(s.rows for s in shards) or 1
        budget = max(1, max_rows * total // max(1, manifest.totals.input_rows))
        per_shard = max(1, round(total / len(shards))) if shards else 1
        for s in _spread(shards, max(1, math.ceil(budget / per_shard))):
            with _open(out_dir, s.path) as f:
                table = pq.read_table(f)
            read += 1
            for d in table.to_pylist():
                rows.append(_from_sample_row(d, True, s.path) if kept else _from_rejected(d))
    return rows, read


def scan_scores(out_dir: str, manifest: Manifest) -> Iterable[tuple[bool, str, dict]]:
    """(kept, "stage/reason", scores) of every row: kept shards' `scores` column, rejected rows' JSON."""
    for s in manifest.shards.get("parquet", []):
        with _open(out_dir, s.path) as f:
            for d in pq.read_table(f, columns=["scores"]).column("scores").to_pylist():
                yield True, "", {k: v for k, v in (d or {}).items() if v is not None}
    for s in manifest.shards.get("rejected", []):
        with _open(out_dir, s.path) as f:
            for r in pq.read_table(f, columns=["stage", "reason", "source", "id", "payload"]).to_pylist():
                row = _from_rejected(r)
                yield False, f"{r['stage']}/{r['reason']}", row.scores


# --- what-if ---------------------------------------------------------------------------------
def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _passes(value: float, op: str, threshold: float) -> bool:
    return value >= threshold if op == ">=" else value <= threshold


def what_if(out_dir: str, manifest: Manifest, changes: dict[str, float]) -> dict[str, Any]:
    """Rows passing each changed threshold now and under the new value, from stored scores only.
    Rows without the score (never measured: a text row has no sharpness) pass both ways."""
    known = {**THRESHOLDS, **CLIP_WHAT_IF}
    for key in changes:
        if key not in known:
            raise SystemExit(f"--what-if {key}: not a threshold the report knows; one of {sorted(known)}")
    stats = {k: {"key": k, "score": known[k][0], "op": known[k][1], "configured": _get(manifest.config, k),
                 "new": v, "rows_with_score": 0, "pass_now": 0, "pass_new": 0, "kept_lost": 0,
                 "rejected_recovered": 0} for k, v in changes.items()}
    together = {"kept": 0, "kept_still_pass": 0}
    for kept, _, scores in scan_scores(out_dir, manifest):
        all_pass = True
        for st in stats.values():
            value = scores.get(st["score"])
            if value is None:
                continue
            now = st["configured"] is None or _passes(value, st["op"], st["configured"])
            new = _passes(value, st["op"], st["new"])
            st["rows_with_score"] += 1
            st["pass_now"] += now
            st["pass_new"] += new
            st["kept_lost"] += kept and not new
            st["rejected_recovered"] += (not kept) and new and not now
            all_pass = all_pass and new
        if kept:
            together["kept"] += 1
            together["kept_still_pass"] += all_pass
    return {"thresholds": list(stats.values()), "kept_rows": together["kept"],
            "kept_passing_all_new_thresholds": together["kept_still_pass"]}


# --- charts ----------------------------------------------------------------------------------
def _figure(width: float, height: float, panels: int = 1, columns: int = 1):
    """A figure of `panels` axes in a grid; one PNG per figure keeps rendering cheap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(panels / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), dpi=80, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.subplots_adjust(left=0.08 if columns > 1 else 0.28, right=0.97, top=1 - 0.35 / (height * rows),
                        bottom=0.6 / (height * rows), hspace=0.55, wspace=0.25)
    return plt, fig, flat[:panels]


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img class="chart" src="{uri}" alt="{html.escape(alt)}">'


def funnel_chart(manifest: Manifest) -> tuple[str, list[tuple[str, int, int]]]:
    """Rows entering each stage and rejected there, in pipeline order."""
    t = manifest.totals
    by_stage: dict[str, int] = {}
    for key, n in t.rejected_by_reason.items():
        stage = key.split("/", 1)[0]
        by_stage[stage] = by_stage.get(stage, 0) + n
    order = [s.value for s in Stage] + sorted(set(by_stage) - {s.value for s in Stage})
    steps, alive = [], t.input_rows
    for stage in order:
        counted = f"keye:{stage}/kept" in manifest.counters
        if stage in by_stage or counted:
            steps.append((stage, alive, by_stage.get(stage, 0)))
            alive -= by_stage.get(stage, 0)
    plt, fig, (ax,) = _figure(6.4, 0.35 * len(steps) + 1.0)
    names = [s for s, _, _ in steps][::-1]
    ax.barh(names, [a - r for _, a, r in steps][::-1], color="#4c8bd6", label="passed")
    ax.barh(names, [r for _, _, r in steps][::-1], left=[a - r for _, a, r in steps][::-1], color="#e07b5f",
            label="rejected")
    ax.set_xlabel("rows entering the stage")
    ax.legend(loc="lower right", fontsize=7)
    return _png(plt, fig), steps


def reasons_chart(manifest: Manifest) -> Optional[str]:
    items = sorted(manifest.totals.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0]))[:30]
    if not items:
        return None
    plt, fig, (ax,) = _figure(6.4, 0.25 * len(items) + 1.0)
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#e07b5f")
    ax.set_xlabel("rejected rows")
    ax.tick_params(axis="y", labelsize=7)
    return _png(plt, fig)


def threshold_of(manifest: Manifest, score: str, rows: list[Row]) -> list[float]:
    if score == "clip_score":   # per-row thresholds (percentiles resolve per source and task)
        return sorted({round(r.scores["clip_threshold"], 4) for r in rows if "clip_threshold" in r.scores})[:6]
    return [float(_get(manifest.config, k)) for k, (s, _) in THRESHOLDS.items()
            if s == score and isinstance(_get(manifest.config, k), (int, float))]


def score_charts(manifest: Manifest, rows: list[Row]) -> Optional[str]:
    """One histogram per stored score (kept and rejected stacked), the configured threshold dashed."""
    found = []
    for score in SCORE_DOCS:
        kept = [r.scores[score] for r in rows if r.kept and score in r.scores]
        rejected = [r.scores[score] for r in rows if not r.kept and score in r.scores]
        if kept or rejected:
            found.append((score, kept, rejected))
    if not found:
        return None
    plt, fig, axes = _figure(4.4, 2.5, len(found), 3)
    for ax, (score, kept, rejected) in zip(axes, found):
        ax.hist([kept, rejected], bins=30, stacked=True, color=["#4c8bd6", "#e07b5f"],
                label=[f"kept ({len(kept)})", f"rejected ({len(rejected)})"])
        values = kept + rejected
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        marks = threshold_of(manifest, score, rows)
        shown = [t for t in marks if lo - span <= t <= hi + span]   # a limit far off the data would squash it
        for k, t in enumerate(shown):
            ax.axvline(t, color="black", linestyle="--", linewidth=1, label="threshold" if k == 0 else None)
        off = [t for t in marks if t not in shown]
        ax.set_title(score + (f" (threshold {', '.join(f'{t:g}' for t in off)} off scale)" if off else ""),
                     fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    return _png(plt, fig)


def token_charts(rows: list[Row]) -> Optional[str]:
    kept = [r for r in rows if r.kept]
    if not kept:
        return None
    plt, fig, axes = _figure(5.2, 2.8, 2, 2)
    for ax, (label, key) in zip(axes, (("task", lambda r: r.task or "none"), ("mode", lambda r: r.mode or "none"))):
        groups: dict[str, list[int]] = {}
        for r in kept:
            groups.setdefault(key(r), []).append(max(1, r.text_tokens + r.visual_tokens))
        names = sorted(groups)
        ax.boxplot([groups[n] for n in names], tick_labels=[f"{n}\n{sum(groups[n]):,}" for n in names])
        ax.set_yscale("log")
        ax.set_ylabel("tokens per row")
        ax.set_title(f"tokens by {label} (label: total in the sample)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    return _png(plt, fig)


def media_charts(rows: list[Row]) -> Optional[str]:
    durations = [m["duration_s"] for r in rows for m in r.media if m.get("kind") == "video" and m.get("duration_s")]
    sides = [min(m["source_width"], m["source_height"]) for r in rows for m in r.media
             if m.get("source_width") and m.get("source_height")]
    found = [(name, values, xlabel) for name, values, xlabel in (("video duration", durations, "seconds"),
                                                                 ("resolution (short side)", sides, "pixels"))
             if values]
    if not found:
        return None
    plt, fig, axes = _figure(4.4, 2.5, len(found), 2)
    for ax, (name, values, xlabel) in zip(axes, found):
        ax.hist(values, bins=30, color="#6aa870")
        ax.set_title(f"{name}: {len(values)} items", fontsize=8)
        ax.set_xlabel(xlabel)
    return _png(plt, fig)


# --- gallery ---------------------------------------------------------------------------------
def _thumb(data: bytes, video: bool) -> Optional[str]:
    from PIL import Image

    try:
        if video:
            import av

            with av.open(io.BytesIO(data)) as c:
                img = next(c.decode(video=0)).to_image()
        else:
            img = Image.open(io.BytesIO(data))
        img = img.convert("RGB")
        img.thumbnail((160, 160))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - an undecodable item (often why it was rejected) has no thumbnail
        return None


def _member_bytes(out_dir: str, tar_path: str, names: set[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        with _open(out_dir, tar_path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for m in tar:
                if m.name in names:
                    found[m.name] = tar.extractfile(m).read()
    except (OSError, tarfile.TarError):
        pass
    return found


def _source_bytes(uri: str, limit: int = 32 << 20) -> Optional[bytes]:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(uri) as f:
            data = f.read(limit + 1)
        return data if len(data) <= limit else None
    except Exception:  # noqa: BLE001 - a missing or remote-only source: no thumbnail
        return None


def gallery(out_dir: str, rows: list[Row], per_side: int) -> list[dict]:
    """Sampled kept and rejected rows (smallest hash of the id: stable across reruns) with a thumbnail."""
    def pick(kept: bool) -> list[Row]:
        pool = [r for r in rows if r.kept == kept]
        return sorted(pool, key=lambda r: hashlib.sha1((r.id or r.source + r.detail).encode()).digest())[:per_side]

    chosen = pick(True) + pick(False)
    wanted: dict[str, set[str]] = {}
    for r in chosen:
        if r.kept and r.media and r.media[0].get("members"):
            tar = posixpath.join(posixpath.dirname(posixpath.dirname(r.shard)), "wds",
                                 posixpath.basename(r.shard).replace(".parquet", ".tar"))
            wanted.setdefault(tar, set()).add(r.media[0]["members"][0])
    blobs: dict[str, bytes] = {}
    for tar, names in wanted.items():
        blobs.update(_member_bytes(out_dir, tar, names))
    items = []
    for r in chosen:
        thumb = None
        if r.media and r.reason not in BROKEN_MEDIA:
            m = r.media[0]
            data = blobs.get((m.get("members") or [""])[0]) if r.kept else _source_bytes(m.get("uri") or "")
            member = (m.get("members") or [""])[0]
            video = m.get("kind") == "video" and not (r.kept and member.endswith((".jpg", ".png", ".webp")))
            thumb = _thumb(data, video) if data else None
        items.append({"row": r, "thumb": thumb})
    return items


# --- page ------------------------------------------------------------------------------------
CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:10px}
img.chart{border:1px solid #eee}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:230px;border:1px solid #ccc;border-radius:4px;padding:6px;font-size:12px;overflow-wrap:anywhere}
.card.kept{border-left:4px solid #4c8bd6}.card.rejected{border-left:4px solid #e07b5f}
.card img{max-width:220px;display:block;margin-bottom:4px}.muted{color:#777}"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(
        f'<td class="{"l" if i == 0 else ""}">{html.escape(f"{v:,}" if isinstance(v, int) else str(v))}</td>'
        for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card(item: dict) -> str:
    r: Row = item["row"]
    parts = [f'<div class="card {"kept" if r.kept else "rejected"}">']
    if item["thumb"]:
        parts.append(f'<img src="{item["thumb"]}" alt="thumbnail">')
    parts.append(f"<b>{'kept' if r.kept else html.escape(r.stage + '/' + r.reason)}</b> "
                 f'<span class="muted">{html.escape(r.source)} · {html.escape(r.task or "?")}</span><br>')
    if r.caption:
        parts.append(f"caption: {html.escape(r.caption[:240])}<br>")
    for a in r.alternatives[:3]:
        score = a.get("clip_score")
        parts.append(f'<span class="muted">other caption ({"" if score is None else f"{score:.3f}"}): '
                     f"{html.escape((a.get('text') or '')[:200])}</span><br>")
    shown = {k: v for k, v in r.scores.items() if k in ("clip_score", "clip_recaption", "clip_threshold",
                                                         "media_min_sharpness", "text_chars")}
    if shown:
        parts.append('<span class="muted">' + ", ".join(f"{k} {v:.3g}" for k, v in sorted(shown.items())) + "</span><br>")
    if r.detail:
        parts.append(f'<span class="muted">{html.escape(r.detail[:240])}</span>')
    parts.append("</div>")
    return "".join(parts)


def render(out_dir: str, max_rows: int = 20000, gallery_size: int = 12) -> str:
    manifest = Manifest.load(out_dir)
    rows, shards_read = read_rows(out_dir, manifest, max_rows)
    t = manifest.totals
    funnel_png, steps = funnel_chart(manifest)
    run = manifest.run or {}
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(manifest.pipeline)}"
           f" report</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(manifest.pipeline)} · recipe {html.escape(manifest.config_name)} "
           f"({html.escape(manifest.config_hash)})</h1>",
           f"<p>{t.input_rows:,} rows in, {t.kept:,} kept, {t.rejected:,} rejected "
           f"({'balanced' if t.balanced else 'NOT BALANCED'}); text tokens {t.text_tokens:,}, visual tokens "
           f"{t.visual_tokens:,}. Runner {html.escape(str(run.get('engine') or run.get('runner', '?')))}, "
           f"{run.get('wall_s', 0):.1f} s. Distributions below: {len(rows):,} rows from {shards_read} shards.</p>",
           "<h2>Funnel</h2>", '<div class="charts">', _img(funnel_png, "funnel"),
           _table(["stage", "rows in", "rejected", "passed"], [[s, a, r, a - r] for s, a, r in steps]), "</div>"]
    reasons = reasons_chart(manifest)
    if reasons:
        out += ["<h2>Rejections by reason</h2>", '<div class="charts">', _img(reasons, "reasons"),
                _table(["stage/reason", "rows"], sorted(([k, v] for k, v in t.rejected_by_reason.items()),
                                                        key=lambda kv: (-kv[1], kv[0]))), "</div>"]
    out += ["<h2>Kept rows and tokens</h2>",
            _table(["task", "kept rows", "tokens"], [[k, v, t.tokens_by_task.get(k, 0)] for k, v in t.kept_by_task.items()]),
            " ", _table(["mode", "tokens"], [[k, v] for k, v in t.tokens_by_mode.items()]), " ",
             _table(["source", "kept rows"], [[k, v] for k, v in t.kept_by_source.items()])]
    for title, chart in (("", token_charts(rows)),
                         ("Scores (dashed: the configured threshold)", score_charts(manifest, rows)),
                         ("Media: durations and resolutions", media_charts(rows))):
        if chart:
            out += ([f"<h2>{title}</h2>"] if title else []) + [f'<div class="charts">{_img(chart, title)}</div>']
    out += ["<h2>Gallery: sampled kept and rejected rows</h2>", '<div class="cards">']
    out += [_card(item) for item in gallery(out_dir, rows, gallery_size)]
    out += ["</div>", "<h2>Counters</h2>", _table(["counter", "value"], [[k, v] for k, v in manifest.counters.items()]),
            "</body></html>"]
    return "\n".join(out)


def write_report(out_dir: str, **kw) -> str:
    from apache_beam.io.filesystems import FileSystems

    from shards.writer import atomic_write

    page = render(out_dir, **kw).encode("utf-8")
    atomic_write(out_dir, REPORT_FILE, "report", 0, lambda f: f.write(page))
    return FileSystems.join(out_dir, REPORT_FILE)


def parse_changes(items: list[str]) -> dict[str, float]:
    changes = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            changes[key.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--what-if {item!r}: expected KEY=NUMBER") from None
    return changes


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output", help="a run's output folder (holds manifest.json and shards.parquet)")
    ap.add_argument("--what-if", nargs="+", default=[], metavar="KEY=VALUE", dest="what_if",
                    help=f"thresholds to try: {', '.join(sorted({**THRESHOLDS, **CLIP_WHAT_IF}))}")
    ap.add_argument("--max_rows", type=int, default=20000, help="rows the charts are drawn from")
    args = ap.parse_args(argv)
    out_dir = args.output.rstrip("/")
    if args.what_if:
        result = what_if(out_dir, Manifest.load(out_dir), parse_changes(args.what_if))
        print(json.dumps(result, indent=1))
        return 0
    print(write_report(out_dir, max_rows=args.max_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
