r"""Forget-set strategies: which rows of the training set X form the forget set A; R = X \ A.

Strategies (``forget.strategy``), as deletion requests arrive:

- ``injected``: every injected copy (the benchmark setting);
- ``label``: every row with a label; ``indices``: rows of X; ``files``: images by name (see
  :mod:`pipeline.data.training_set`: ``mnist-train-00042``, a path relative to the image folder, ``tshirt``).
  These select exactly the rows asked for; identical copies left in R are logged as a warning;
- ``random``: ``k`` distinct images drawn with ``seed``;
- ``memorized``: what the pretrained model leaks. Draw M samples from it, find each sample's
  nearest distinct training image x (exact L2 in [0, 1] pixel space), and count the sample as a
  reproduction of x when ``d(sample, x) < threshold * d_NN(x)``, where d_NN(x) is the distance
  from x to its nearest other distinct training image: a copy is much closer to x than x's own
  neighbours are. Images reproduced at least ``min_count`` times are selected, most reproduced
  first, at most ``max_images`` (Carlini et al. 2023, "Extracting training data from diffusion
  models", use the same search-and-compare with a data-relative distance);
- ``request``: a deletion request, a YAML file naming images by name, path or the SHA-256 of their
  pixels (:mod:`pipeline.data.requests`): those images, their identical copies and their
  near-duplicates (:func:`choose_requested`); with ``experiment.requests``, the union of several
  requests, each row marked with the request that took it;
- ``duplicated``: clusters of near-duplicates: connected components of the graph linking distinct
  images closer than ``threshold * median d_NN`` (faiss range search), a cluster's size counting
  identical copies; clusters of at least ``min_size`` rows are selected, largest first, at most
  ``max_clusters``. Duplication is what drives memorization (Carlini et al. 2023; Somepalli et al.
  2023).

``random``, ``memorized``, ``duplicated`` and ``request`` select distinct images and take every
identical copy.

The result (:class:`ForgetChoice`) carries the rows and the evidence that chose them, for the
forget set's table (:func:`table`) and picture (:func:`save_figure`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.artifacts import to_csv
from pipeline.data.requests import read_request, requested_images
from pipeline.data.sets import group_identical
from pipeline.diffusion.images import grid, save_labelled_grid, save_png, to_float
from pipeline.errors import UserError
from pipeline.search.embeddings import decode
from pipeline.search.neighbours import exact_search, nearest_other, range_pairs, temporary_vectors, within

log = logging.getLogger(__name__)


EVIDENCE_SHOWN = 8  # reproducing samples shown beside each memorized image


@dataclass
class ForgetChoice:
    """Rows of X in A; for ``random``/``memorized``/``duplicated`` also one line of evidence per
    selected distinct image (its representative row first) and the samples that reproduced it."""

    rows: np.ndarray
    evidence: list[dict] = field(default_factory=list)
    reproductions: list[np.ndarray] = field(default_factory=list)
    request: np.ndarray | None = None  # for each row, which of experiment.requests took it (None: one request)


@dataclass
class DistinctImages:
    """The distinct images of X: ``first`` one row per distinct image, ``group`` the distinct
    image of every row, ``copies`` rows per distinct image."""

    group: np.ndarray
    first: np.ndarray
    copies: np.ndarray

    @classmethod
    def of(cls, images: np.ndarray) -> "DistinctImages":
        group, first = group_identical(images)
        return cls(group, first, np.bincount(group, minlength=len(first)))

    def rows_of(self, chosen: np.ndarray) -> np.ndarray:
        """Every row of X that is a copy of one of the ``chosen`` distinct images."""
        return np.flatnonzero(np.isin(self.group, chosen))


def named_rows(cfg: dict, train: dict[str, np.ndarray]) -> np.ndarray:
    n = len(train["images"])
    if cfg["strategy"] == "injected":
        return np.flatnonzero(train["injected"] >= 0)
    if cfg["strategy"] == "label":
        return np.flatnonzero(train["labels"] == cfg["label"])
    if cfg["strategy"] == "files":
        unknown = sorted(set(cfg["files"]) - set(train["names"].tolist()))
        if unknown:
            raise UserError(f"forget.files: {len(unknown)} name(s) not in the training set, e.g. {unknown[:3]}; "
                            f"names look like {train['names'][:2].tolist()}")
        return np.flatnonzero(np.isin(train["names"], cfg["files"]))
    rows = np.unique(np.asarray(cfg["indices"], dtype=np.int64))
    if rows.max() >= n:
        raise UserError(f"forget.indices: row {rows.max()} is out of range; the training set has {n} rows")
    return rows


def choose_random(cfg: dict, images: np.ndarray) -> ForgetChoice:
    distinct = DistinctImages.of(images)
    if cfg["k"] >= len(distinct.first):
        raise UserError(f"forget.random.k: {cfg['k']} images asked for, but the training set has only "
                        f"{len(distinct.first)} distinct images and the retain set must keep one")
    chosen = np.sort(np.random.default_rng(cfg["seed"]).choice(len(distinct.first), cfg["k"], replace=False))
    return ForgetChoice(distinct.rows_of(chosen), [{"row": int(distinct.first[c])} for c in chosen])


def choose_memorized(cfg: dict, images: np.ndarray, samples: np.ndarray) -> ForgetChoice:
    """The training images that ``samples`` ([0, 1] floats, (M, C, H, W)) reproduce (module doc)."""
    distinct = DistinctImages.of(images)
    if len(distinct.first) < 2:
        raise UserError("forget.strategy 'memorized' needs at least two distinct training images")
    with temporary_vectors(images, rows=distinct.first) as vectors:
        d_nn = nearest_other(vectors)
        pos, dist = exact_search(vectors, samples.reshape(len(samples), -1), 1)
    nearest, dist = pos[:, 0], dist[:, 0]
    hit = dist < cfg["threshold"] * d_nn[nearest]
    counts = np.bincount(nearest[hit], minlength=len(distinct.first))
    ranked = [c for c in np.lexsort((d_nn, -counts)) if counts[c] >= cfg["min_count"]][:cfg["max_images"]]
    evidence, reproductions = [], []
    for c in ranked:
        which = np.flatnonzero(hit & (nearest == c))
        which = which[np.argsort(dist[which], kind="stable")]
        reproductions.append(which)
        evidence.append({"row": int(distinct.first[c]), "reproductions": int(counts[c]),
                         "closest": round(float(dist[which[0]]), 4),
                         "median_distance": round(float(np.median(dist[which])), 4),
                         "threshold": round(float(cfg["threshold"] * d_nn[c]), 4),
                         "nearest_other_image": round(float(d_nn[c]), 4)})
    log.info("%d of %d samples reproduce a training image (L2 < %.2f x its nearest-neighbour distance); "
             "%d images reproduced at least %d times", hit.sum(), len(samples), cfg["threshold"],
             int((counts >= cfg["min_count"]).sum()), cfg["min_count"])
    return ForgetChoice(distinct.rows_of(np.asarray(ranked, dtype=np.int64)), evidence, reproductions)


def choose_duplicated(cfg: dict, images: np.ndarray) -> ForgetChoice:
    """Clusters of near-duplicate training images (module doc)."""
    distinct = DistinctImages.of(images)
    if len(distinct.first) < 2:
        raise UserError("forget.strategy 'duplicated' needs at least two distinct training images")
    with temporary_vectors(images, rows=distinct.first) as vectors:
        radius = cfg["threshold"] * float(np.median(nearest_other(vectors)))
        first, second = range_pairs(vectors, radius)
    m = len(distinct.first)
    graph = coo_matrix((np.ones(len(first)), (first, second)), shape=(m, m))
    _, cluster = connected_components(graph, directed=False)
    size = np.bincount(cluster, weights=distinct.copies).astype(np.int64)
    ranked = [c for c in np.argsort(-size, kind="stable") if size[c] >= cfg["min_size"]][:cfg["max_clusters"]]
    evidence = []
    for rank, c in enumerate(ranked):
        members = np.flatnonzero(cluster == c)
        evidence += [{"row": int(distinct.first[i]), "cluster": rank, "cluster_rows": int(size[c]),
                      "cluster_images": len(members)} for i in members]
    log.info("near-duplicate radius L2 %.4f; %d clusters of at least %d rows", radius,
             int((size >= cfg["min_size"]).sum()), cfg["min_size"])
    return ForgetChoice(distinct.rows_of(np.flatnonzero(np.isin(cluster, ranked))), evidence)


def choose_requested(files: list[str], near_duplicates: float, train: dict[str, np.ndarray]) -> ForgetChoice:
    """What the deletion requests in ``files`` name, every identical copy, and their near-duplicates:
    the distinct training images closer to a requested one than ``near_duplicates`` * the median
    nearest-neighbour distance of the data (L2 in [0, 1] pixels, as ``duplicated``; 0: identical
    copies only). Duplicates are what a model memorizes, so a request that left them would leave
    the image in the model. The requests are taken in order, as they arrive: an image that an
    earlier request took stays with it (``ForgetChoice.request``: the index in ``files`` of each
    row's request). The evidence says why each image was taken and by which request."""
    images = train["images"]
    distinct = DistinctImages.of(images)
    reasons: dict[int, dict] = {}  # distinct image -> why it was taken
    owner: dict[int, int] = {}  # distinct image -> the index of the request that took it
    search = near_duplicates > 0 and len(distinct.first) > 1
    with temporary_vectors(images, rows=distinct.first) if search else contextlib.nullcontext() as vectors:
        radius = near_duplicates * float(np.median(nearest_other(vectors))) if search else 0.0
        for k, path in enumerate(files):
            request = read_request(path)
            named = requested_images(request, path, train["names"], images, distinct.first)
            found = {d: (how, 0.0) for d, how in reversed(named)}  # the first entry naming an image gives its reason
            if search:
                for d, why in near_duplicates_of(vectors, np.array([d for d, _ in named]), radius, distinct).items():
                    found.setdefault(d, why)
            new = [d for d in found if d not in reasons]
            if not new:
                raise UserError(f"{path}: every image request {request['id']} names was taken by an earlier request")
            for d in new:
                reasons[d] = {"row": int(distinct.first[d]), "request": request["id"], "reason": found[d][0],
                              "distance": found[d][1]}
                owner[d] = k
            log.info("request %s: %d images named, %d taken with their near-duplicates (L2 < %.4f)",
                     request["id"], len(named), len(new), radius)
    chosen = sorted(reasons, key=lambda d: distinct.first[d])  # in row order
    rows = distinct.rows_of(np.array(chosen, dtype=np.int64))
    return ForgetChoice(rows, [reasons[d] for d in chosen],
                        request=np.array([owner[g] for g in distinct.group[rows]], dtype=np.int64))


def near_duplicates_of(vectors: np.ndarray, requested: np.ndarray, radius: float,
                       distinct: DistinctImages) -> dict[int, tuple[str, float]]:
    """The distinct images within ``radius`` of the ``requested`` ones (pixel ``vectors`` of the
    distinct images), each with the reason and the distance of its closest requested image."""
    query, near = within(vectors, decode(vectors[requested]), radius)
    dist = np.linalg.norm(decode(vectors[near]) - decode(vectors[requested[query]]), axis=1)
    found: dict[int, tuple[str, float]] = {}
    for q, d, r in sorted(zip(query, near, dist), key=lambda x: x[2]):
        found.setdefault(int(d), (f"near-duplicate of row {distinct.first[requested[q]]}", round(float(r), 4)))
    return found


def choose(params: dict, train: dict[str, np.ndarray], samples: np.ndarray | None = None) -> ForgetChoice:
    """The forget set of ``forget.strategy``; ``samples`` from the pretrained model for ``memorized``."""
    cfg = params["forget"]
    strategy = cfg["strategy"]
    if strategy == "random":
        choice = choose_random(cfg["random"], train["images"])
    elif strategy == "memorized":
        if samples is None:
            raise UserError("forget.strategy 'memorized' needs samples of the pretrained model (--model)")
        choice = choose_memorized(cfg["memorized"], train["images"], samples)
    elif strategy == "duplicated":
        choice = choose_duplicated(cfg["duplicated"], train["images"])
    elif strategy == "request":
        files = params["experiment"]["requests"] or [cfg["request"]["file"]]
        choice = choose_requested(files, cfg["request"]["near_duplicates"], train)
    else:
        choice = ForgetChoice(named_rows(cfg, train))
    n = len(train["images"])
    if len(choice.rows) == 0:
        raise UserError(f"forget.strategy {strategy!r} selects no image; the forget set would be empty")
    if len(choice.rows) == n:
        raise UserError(f"forget.strategy {strategy!r} selects every image; the retain set would be empty")
    return choice


def table(choice: ForgetChoice, train: dict[str, np.ndarray], group: np.ndarray, distinct: np.ndarray) -> str:
    """One CSV line per distinct forget image: row, name, label, copies in A, then the evidence."""
    copies = np.bincount(group)
    base = {int(r): {"row": int(r), "name": str(train["names"][r]), "label": int(train["labels"][r]),
                     "copies": int(c)} for r, c in zip(distinct, copies)}
    if not choice.evidence:
        return to_csv(list(base.values()))
    return to_csv([{**base[e["row"]], **e} for e in choice.evidence])  # both name a group by its first row


def save_figure(path, choice: ForgetChoice, images: np.ndarray, distinct: np.ndarray,
                samples: np.ndarray | None) -> None:
    """The selected images; for ``memorized`` each beside its closest reproducing samples."""
    if not choice.reproductions:
        save_png(path, grid(to_float(images[distinct[:64]])), scale=4)
        return
    tiles = []
    for e, which in zip(choice.evidence[:16], choice.reproductions):
        shown = samples[which[:EVIDENCE_SHOWN]]
        blank = np.zeros((EVIDENCE_SHOWN - len(shown), *shown.shape[1:]), dtype=np.float32)
        tiles.append(np.concatenate([to_float(images[e["row"]][None]), shown, blank]))
    labels = [f"row {e['row']}: {e['reproductions']} samples, closest L2 {e['closest']:.2f}"
              for e in choice.evidence[:16]]
    save_labelled_grid(path, np.concatenate(tiles), EVIDENCE_SHOWN + 1, labels,
                       "Training images the pretrained model reproduces",
                       f"left: training image; right: the closest samples that reproduce it (at most {EVIDENCE_SHOWN})")
