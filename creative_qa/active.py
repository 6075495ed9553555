"""What to label next (``creative-qa label-next``): a ranked, diverse batch from the pool, and labels to recheck.

With a few hundred labels, which few hundred matters as much as any method. The current model scores the
pool and the labeled set (``creative_qa.batch``: resumable, a corrupt file reported and skipped), then:

* **Uncertainty, weighted for multi-label.** Each tag's uncertainty is the binary entropy of its
  probability (1 at 0.5, 0 at 0 or 1). Tags are weighted towards the rare (``1 / sqrt(prior)`` of their
  share of positives among the known labels, capped), the unreliable (those the model's flag policy cannot
  back: x2) and the ones the team names (``tags``: x3); a creative's score is the weighted mean.
* **Representative and diverse.** The model's output space (each tag's logit and the quality's,
  standardised over the pool) is where redundancy shows for labeling: two creatives the model sees alike
  teach it alike. The pool is clustered there into ``budget`` clusters by k-means weighted by each creative's
  uncertainty x ``d / (d + d0)`` (``d`` its distance to the nearest labeled creative, ``d0`` the pool's median
  such distance: what is labeled already counts less; with nothing labeled, the uncertainty alone and ``d0``
  the median distance between two pool creatives), and each cluster gives its most central
  creative, the heaviest clusters first (Zhdanov 2019, "Diverse mini-batch active learning"); where
  near-duplicates empty a cluster, the batch is filled up with the heaviest creatives left. The batch follows
  where the pool's uncertain creatives are, as a random draw follows the pool, instead of chasing its
  outliers: at a few hundred labels the outliers a greedy farthest-first rule picks teach less than a random
  draw (``benchmarks/active.py``, RESULTS.md).
* **Near-duplicates removed.** A 64-bit difference hash of each creative (its luma at 9 x 8, each pixel
  against its right neighbour): one within ``dup_bits`` bits of a labeled or already picked creative, and
  that the model also sees alike (closer than ``DUP_NEAR`` x ``d0`` in its output space), is dropped:
  resized, recompressed or re-exported copies of one design. A blurred or pixelated copy keeps the hash but
  not the model's view, and stays: its defect is what a label would teach.
* **Labels to recheck, kept apart.** The labeled creatives' known labels the model most confidently
  contradicts (a 1 it scores at or under ``1 - confident``, a 0 at or over ``confident``), ranked; for the
  cross-validated list, run ``creative-qa label-issues``.

The active-learning libraries were looked at first: baal's heuristics (BALD, entropy) need Monte-Carlo
dropout samples of a torch model, not the exported ONNX graph; modAL's batch sampling is single-label over a
scikit-learn estimator; small-text is for text classification. The rules above are a weighted k-means and a few
array operations (numpy; no new dependency).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from creative_qa.manifest import abspaths, read_manifest

log = logging.getLogger(__name__)

RARE_CAP = 4.0  # the most a rare tag's weight may exceed a common one's
UNRELIABLE_WEIGHT = 2.0
FOCUS_WEIGHT = 3.0
DUP_BITS = 6  # difference hashes within this many of 64 bits are near-duplicates ...
DUP_NEAR = 0.5  # ... where the model's outputs are also closer than this x the pool's median distance
CONFIDENT = 0.9  # a known label the model contradicts at this probability (or 1 - it) is a recheck suspect
LOGIT_CLIP = 6.0


@dataclass
class Selection:
    chosen: pd.DataFrame  # the batch to label, ranked, with why
    recheck: pd.DataFrame  # known labels the model contradicts most, ranked
    skipped: dict[str, int]  # pool creatives left out, by reason


def entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits: 1 at 0.5, 0 at 0 and 1."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def tag_weights(
    labels: np.ndarray, tags: list[str], unreliable: set[str] = frozenset(), focus: set[str] = frozenset()
) -> np.ndarray:
    """``(T,)`` weights summing to 1: rare tags up (``1 / sqrt(prior)``, at most ``RARE_CAP`` x the smallest),
    unreliable tags x ``UNRELIABLE_WEIGHT``, the team's ``focus`` tags x ``FOCUS_WEIGHT``."""
    known = ~np.isnan(labels)
    pos = np.nansum(labels, axis=0)
    prior = (pos + 1.0) / (known.sum(axis=0) + 2.0)  # a tag never labelled counts as rare-ish, not infinite
    w = 1.0 / np.sqrt(prior)
    w = np.minimum(w, RARE_CAP * w.min())
    w = w * np.array([UNRELIABLE_WEIGHT if t in unreliable else 1.0 for t in tags])
    w = w * np.array([FOCUS_WEIGHT if t in focus else 1.0 for t in tags])
    return w / w.sum()


def embedding(probs: np.ndarray, quality: np.ndarray, mean=None, std=None) -> tuple[np.ndarray, tuple]:
    """The model's output space: tag and quality logits (clipped), standardised with ``mean``/``std`` (the pool's
    when not given). Returns the embedding and the ``(mean, std)`` used."""
    p = np.clip(np.column_stack([probs, quality]), 1e-6, 1 - 1e-6)
    z = np.clip(np.log(p / (1 - p)), -LOGIT_CLIP, LOGIT_CLIP)
    if mean is None:
        mean, std = z.mean(axis=0), z.std(axis=0) + 1e-3
    return (z - mean) / std, (mean, std)


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: the luma at 9 x 8, each pixel brighter than its right neighbour or not."""
    a = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(hashes: np.ndarray, h: int) -> np.ndarray:
    """Bits differing between each of ``hashes`` (uint64) and ``h``."""
    x = np.bitwise_xor(hashes, np.uint64(h))
    return _POP[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def hashes_of(paths: list[str], desc: str, progress: bool = True) -> np.ma.MaskedArray:
    """Difference hashes of the files (their first frame, decoded small), masked where a file does not decode.
    NOTE: decoded again here, in this process (the batch scoring before does not keep pixels)."""
    from creative_qa.media import MediaError, decode_file

    out = np.ma.masked_all(len(paths), dtype=np.uint64)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="creative", disable=not progress, leave=False)):
        try:
            frames = decode_file(p, max_frames=1, min_side=64)
        except (MediaError, OSError) as e:
            log.warning("%s: %s (no near-duplicate check for it)", p, e)
            continue
        out[i] = dhash(
            frames[0].source if isinstance(frames[0].source, Image.Image) else Image.fromarray(frames[0].source)
        )
    return out


def select(
    pool_probs: np.ndarray,
    pool_quality: np.ndarray,
    weights: np.ndarray,
    budget: int,
    labeled_emb: tuple[np.ndarray, np.ndarray] | None = None,
    pool_hashes: np.ma.MaskedArray | None = None,
    labeled_hashes: np.ma.MaskedArray | None = None,
    dup_bits: int = DUP_BITS,
    seed: int = 0,
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray, dict[str, int], float]:
    """The batch: pool indices in order, and per pool creative its uncertainty, its distance to the nearest
    labeled creative, and (for the chosen) the share of the pool's weight its cluster holds; what was left out
    why; and the distance scale ``d0``. ``labeled_emb``: the labeled creatives' ``(probs, quality)``, in the order
    of ``labeled_hashes``; hashes are masked where a file did not decode. ``seed``: the clustering's."""
    n = len(pool_probs)
    skipped = {"near-duplicate of a labeled creative": 0, "near-duplicate of a chosen one": 0}
    if n == 0:
        return [], np.zeros(0), np.zeros(0), np.zeros(0), skipped, 1.0
    pool_hashes = np.ma.asarray(pool_hashes) if pool_hashes is not None else None
    labeled_hashes = np.ma.asarray(labeled_hashes) if labeled_hashes is not None else None
    unc = entropy(pool_probs) @ weights
    emb, stats = embedding(pool_probs, pool_quality)
    ref = embedding(*labeled_emb, *stats)[0] if labeled_emb is not None and len(labeled_emb[0]) else emb[:0]
    dist = nearest(emb, ref)
    alive = np.ones(n, dtype=bool)
    # the distance scale: the pool's median distance to the nearest labeled creative, or without labels between
    # two of its creatives (``pool_scale``): the same whatever the budget
    d0 = float(np.median(dist)) if len(ref) else pool_scale(emb, seed)
    # the weight: uncertainty, less where a labeled creative already stands (d / (d + d0))
    discount = (dist / (dist + d0) if d0 > 0 else (dist > 0).astype(float)) if len(ref) else 1.0
    weight = unc * discount
    weight = weight + 1e-6 * max(float(weight.max()), 1e-6)  # a creative the model is sure of still counts a little

    def duplicates(h: int, apart: np.ndarray) -> np.ndarray:
        """Alive pool creatives within ``dup_bits`` of hash ``h`` and closer than ``DUP_NEAR`` x ``d0`` (``apart``;
        at ``d0`` 0, only those the model sees exactly alike)."""
        same = alive & ~np.ma.getmaskarray(pool_hashes) & (hamming(pool_hashes.filled(0), h) <= dup_bits)
        return same & (apart <= DUP_NEAR * d0)

    if pool_hashes is not None and labeled_hashes is not None:
        for j in np.flatnonzero(~np.ma.getmaskarray(labeled_hashes)):
            dup = duplicates(int(labeled_hashes[j]), np.sqrt(((emb - ref[j]) ** 2).sum(-1)))
            skipped["near-duplicate of a labeled creative"] += int(dup.sum())
            alive &= ~dup
    live = np.flatnonzero(alive)
    k = min(budget, len(live))
    share = np.full(n, np.nan)
    chosen: list[int] = []

    def take(i: int, part: float) -> None:
        """Choose pool creative ``i`` (its cluster's share ``part``) and drop its alive near-duplicates."""
        chosen.append(int(i))
        share[i] = part
        alive[i] = False
        if pool_hashes is not None and not np.ma.getmaskarray(pool_hashes)[i]:
            dup = duplicates(int(pool_hashes[i]), np.sqrt(((emb - emb[i]) ** 2).sum(-1)))
            skipped["near-duplicate of a chosen one"] += int(dup.sum())
            alive[dup] = False

    if k == 0:
        return chosen, unc, dist, share, skipped, d0
    centres, member, apart2 = weighted_kmeans(emb[live], weight[live], k, seed)
    mass = np.bincount(member, weights=weight[live], minlength=k)
    by_centre = live[np.lexsort((apart2, member))]  # each cluster's creatives together, the most central first
    counts = np.bincount(member, minlength=k)
    ends = np.cumsum(counts)
    starts = ends - counts
    for c in np.argsort(-mass, kind="stable"):
        central = [i for i in by_centre[starts[c] : ends[c]] if alive[i]]
        if central:  # the most central alive member
            take(central[0], mass[c] / mass.sum())
    # clusters emptied by near-duplicates: the batch is filled up with the heaviest creatives left (share 0)
    for i in np.argsort(-np.where(alive, weight, -np.inf), kind="stable"):
        if len(chosen) >= k:
            break
        if alive[i]:
            take(i, 0.0)
    return chosen, unc, dist, share, skipped, d0


SCALE_PAIRS = 4096  # pairs of pool creatives the distance scale is measured on when nothing is labeled


def pool_scale(emb: np.ndarray, seed: int = 0) -> float:
    """Without labels, the distance scale: the median distance between two different pool creatives, over a
    fixed sample of ``SCALE_PAIRS`` pairs. The same whatever the budget, and a minority of copies does not move
    it; 0 for a pool of one."""
    n = len(emb)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, SCALE_PAIRS)
    j = rng.integers(0, n - 1, SCALE_PAIRS)
    j[j >= i] += 1  # never a creative with itself
    return float(np.median(np.sqrt(((emb[i] - emb[j]) ** 2).sum(-1))))


def weighted_kmeans(
    x: np.ndarray, w: np.ndarray, k: int, seed: int = 0, iters: int = 30
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` centres of ``x`` weighted by ``w`` (k-means++ seeding, then Lloyd's iterations until no creative moves
    or ``iters``): the centres, each row's centre and its squared distance to it. Memory stays bounded
    (``assign``'s blocks) whatever ``len(x)`` and ``k``."""
    rng = np.random.default_rng(seed)
    n = len(x)
    p = w / w.sum()
    centres = np.empty((k, x.shape[1]))
    first = int(rng.choice(n, p=p))
    centres[0] = x[first]
    d2 = ((x - x[first]) ** 2).sum(1)
    for j in range(1, k):
        q = w * d2
        i = int(rng.choice(n, p=q / q.sum())) if q.sum() > 0 else int(rng.choice(n, p=p))
        centres[j] = x[i]
        d2 = np.minimum(d2, ((x - x[i]) ** 2).sum(1))
    member, d2 = assign(x, centres)
    for _ in range(iters):
        mass = np.bincount(member, weights=w, minlength=k)
        sums = np.stack([np.bincount(member, weights=w * x[:, d], minlength=k) for d in range(x.shape[1])], 1)
        held = mass > 0  # a centre nobody is nearest to stays where it is
        centres[held] = sums[held] / mass[held, None]
        moved, d2 = assign(x, centres)
        if (moved == member).all():
            break
        member = moved
    return centres, member, d2


def assign(x: np.ndarray, ref: np.ndarray, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x``'s nearest row of ``ref`` and the squared distance to it (-1 and inf without any), in
    blocks of both: memory stays at ``block`` x ``block`` distances whatever the sizes."""
    member, d2 = np.full(len(x), -1, dtype=np.int64), np.full(len(x), np.inf)
    rr = (ref**2).sum(1)
    for i in range(0, len(x), block):
        e = x[i : i + block]
        ee = (e**2).sum(1)[:, None]
        for k in range(0, len(ref), block):
            d = np.maximum(ee + rr[None, k : k + block] - 2.0 * e @ ref[k : k + block].T, 0.0)
            j = d.argmin(1)
            dj = d[np.arange(len(e)), j]
            closer = dj < d2[i : i + block]  # an earlier block keeps a tie, as one argmin over all would
            member[i : i + block][closer], d2[i : i + block][closer] = j[closer] + k, dj[closer]
    return member, d2


def nearest(emb: np.ndarray, ref: np.ndarray, block: int = 4096) -> np.ndarray:
    """Each row of ``emb``'s distance to its nearest row of ``ref`` (inf without any), in blocks (``assign``)."""
    return np.sqrt(assign(emb, ref, block)[1])


def recheck(labels: np.ndarray, probs: np.ndarray, tags: list[str], paths: list[str], confident: float = CONFIDENT):
    """Known labels the model contradicts at ``confident`` or more, most contradicted first."""
    rows = []
    for j, t in enumerate(tags):
        y, p = labels[:, j], probs[:, j]
        for i in np.flatnonzero(((y == 1) & (p <= 1 - confident)) | ((y == 0) & (p >= confident))):
            rows.append({"path": paths[i], "tag": t, "given": int(y[i]), "model": round(float(p[i]), 4),
                         "disagreement": round(float(abs(y[i] - p[i])), 4)})  # fmt: skip
    df = pd.DataFrame(rows, columns=["path", "tag", "given", "model", "disagreement"])
    return df.sort_values("disagreement", ascending=False, kind="stable").reset_index(drop=True)


def _why(probs: np.ndarray, weights: np.ndarray, tags: list[str], dist: float, share: float, d0: float, k: int = 3):
    contrib = entropy(probs) * weights
    top = [j for j in np.argsort(-contrib)[:k] if contrib[j] > 0.01 * contrib.max()]
    uncertain = ", ".join(f"{tags[j]} {probs[j]:.2f}" for j in top)
    far = "no labeled creative to compare" if not np.isfinite(dist) else f"{dist:.2f} from the nearest labeled"
    stands = f"its cluster holds {100 * share:.1f} % of the pool's weight" if share > 0 else "filling in for a cluster"
    return uncertain, f"uncertain: {uncertain}; {stands}; {far} (median {d0:.2f})"


def label_next(
    model,
    pool: str | Path,
    labeled: str | Path | None,
    budget: int,
    work: Path,
    focus: list[str] | None = None,
    dup_bits: int = DUP_BITS,
    confident: float = CONFIDENT,
    recheck_top: int = 50,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Selection:
    """Score ``pool`` and ``labeled`` with ``model`` (a ``Scorer``) into ``work`` (resumable; ``overwrite``: start the
    scores afresh), then choose ``budget`` creatives to label and the known labels to recheck (see the module doc).
    A creative that cannot be scored, or whose scores are not finite, is left out and counted."""
    from creative_qa.batch import batch_score
    from creative_qa.manifest import label_matrix

    tags = model.tags
    unknown = sorted(set(focus or ()) - set(tags))
    if unknown:
        raise ValueError(f"--tags: {', '.join(unknown)} not in the model's taxonomy ({', '.join(tags)})")
    if budget < 1:
        raise ValueError(f"the budget must be at least 1, got {budget}")
    work.mkdir(parents=True, exist_ok=True)
    opts = {"workers": workers, "report": False, "progress": progress, "overwrite": overwrite}
    batch_score(pool, work / "pool.parquet", model, **opts)
    scored = pd.read_parquet(work / "pool.parquet").drop_duplicates("path")
    pool_df = read_manifest(pool)
    finite = np.isfinite(scored[[*tags, "quality"]].to_numpy(float)).all(axis=1)
    ok = scored[scored["error"].isna().to_numpy() & finite]
    errors, not_finite = int(scored["error"].notna().sum()), int((scored["error"].isna().to_numpy() & ~finite).sum())
    lab_df, lab_probs, lab_quality, lab_labels = None, np.zeros((0, len(tags))), np.zeros(0), np.zeros((0, len(tags)))
    if labeled is not None:
        lab_df = read_manifest(labeled)
        lab_labels = label_matrix(lab_df, tags, model.taxonomy.new_tags)
        batch_score(labeled, work / "labeled.parquet", model, **opts)
        ls = pd.read_parquet(work / "labeled.parquet").drop_duplicates("path").set_index("path")
        got = ls.reindex(lab_df["path"].astype(str))
        have = got["error"].isna().to_numpy() & np.isfinite(got[[*tags, "quality"]].to_numpy(float)).all(axis=1)
        lab_probs, lab_quality = got[tags].to_numpy(float)[have], got["quality"].to_numpy(float)[have]
        lab_df, lab_labels = lab_df[have].reset_index(drop=True), lab_labels[have]
        already = set(lab_df["abspath"].map(lambda p: str(Path(p).resolve())))
        ok = ok[[str(Path(p).resolve()) not in already for p in abspaths(pool_df, ok["path"])]]
    already_n = int(scored["error"].isna().sum()) - not_finite - len(ok)
    ok = ok.reset_index(drop=True)
    skipped = {"could not be scored": errors, "scores not finite": not_finite, "already labeled": already_n}
    weights = tag_weights(lab_labels if len(lab_labels) else np.full((1, len(tags)), np.nan), tags,
                          set(model.unreliable), set(focus or ()))  # fmt: skip
    probs, quality = ok[tags].to_numpy(float), ok["quality"].to_numpy(float)
    paths = abspaths(pool_df, ok["path"])
    pool_h = hashes_of(paths, "pool hashes", progress) if dup_bits >= 0 else None
    lab_h = (
        hashes_of(list(lab_df["abspath"]), "labeled hashes", progress) if lab_df is not None and dup_bits >= 0 else None
    )
    chosen, unc, dist, priority, dropped, d0 = select(
        probs, quality, weights, budget, (lab_probs, lab_quality) if len(lab_probs) else None, pool_h, lab_h, dup_bits
    )
    skipped |= dropped
    rows = []
    for rank, i in enumerate(chosen, 1):
        uncertain, reason = _why(probs[i], weights, tags, dist[i], priority[i], d0)
        rows.append({"path": str(ok["path"].iloc[i]), "abspath": paths[i], "rank": rank,
                     "priority": round(float(priority[i]), 4),
                     "uncertainty": round(float(unc[i]), 4),
                     "distance": round(float(dist[i]), 4) if np.isfinite(dist[i]) else None,
                     "uncertain_tags": uncertain, "why": reason, "quality": round(float(quality[i]), 4),
                     **{t: round(float(probs[i, j]), 4) for j, t in enumerate(tags)}})  # fmt: skip
    columns = ["path", "abspath", "rank", "priority", "uncertainty", "distance", "uncertain_tags", "why", "quality"]
    chosen_df = pd.DataFrame(rows, columns=[*columns, *tags])
    lab_paths = list(lab_df["path"].astype(str)) if lab_df is not None else []
    return Selection(chosen_df, recheck(lab_labels, lab_probs, tags, lab_paths, confident).head(recheck_top), skipped)
