"""pipeline.data.forget_sets: choosing the forget set A (every strategy), grouping identical copies,
R = X \\ A, and the forget_set stage CLI."""

import csv

import numpy as np
import pytest
import yaml

from pipeline.artifacts import load_npz, save_npz
from pipeline.data.forget_sets import choose, choose_memorized
from pipeline.data.sets import group_identical, retain_rows
from pipeline.diffusion.models import save_model
from pipeline.errors import UserError
from pipeline.stages import forget_set as forget_set_stage
from pipeline.stages.forget_set import main

MEMORIZED = {"samples": 8, "steps": 2, "batch_size": 8, "seed": 0, "threshold": 0.5, "min_count": 1,
             "max_images": 10}
DUPLICATED = {"threshold": 0.2, "min_size": 2, "max_clusters": 10}


@pytest.fixture
def train(rng):
    """10 rows: 7 distinct base images (labels 0,1,2,0,1,2,0), then 3 identical injected copies."""
    base = rng.integers(0, 256, size=(7, 1, 4, 4), dtype=np.uint8)
    copy = np.full((1, 1, 4, 4), 200, dtype=np.uint8)
    return {
        "images": np.concatenate([base, np.repeat(copy, 3, axis=0)]),
        "labels": np.array([0, 1, 2, 0, 1, 2, 0, -1, -1, -1], dtype=np.int64),
        "injected": np.array([-1] * 7 + [0, 0, 0], dtype=np.int64),
        "names": np.array([f"img-{i}" for i in range(7)] + ["tshirt"] * 3),
    }


def with_forget(params, **forget):
    params["forget"] = {"strategy": "injected", "label": None, "indices": None, **forget}
    return params


# ---------------------------------------------------------------- brute-force references


def distinct_of(images):
    """For each row, the index of its distinct image (numbered by first appearance), and the first
    row of each distinct image: byte comparison, no numpy grouping."""
    seen, of = {}, []
    for im in images:
        of.append(seen.setdefault(im.tobytes(), len(seen)))
    of = np.array(of)
    return of, np.array([int(np.flatnonzero(of == g)[0]) for g in range(len(seen))])


def copies_of(images, rows):
    """Every row of ``images`` byte-identical to one of ``rows``."""
    wanted = {images[r].tobytes() for r in rows}
    return [i for i, im in enumerate(images) if im.tobytes() in wanted]


def distances(a, b):
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :].astype(np.float64)) ** 2).sum(-1))


def unit(images):
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def random_images(rng, n, shape=(1, 8, 8)):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def train_dict(images, names=None, injected=None):
    n = len(images)
    return {"images": images, "labels": np.arange(n, dtype=np.int64) % 10,
            "injected": np.full(n, -1, dtype=np.int64) if injected is None else injected,
            "names": np.array([f"img-{i:03d}" for i in range(n)]) if names is None else names}


# ---------------------------------------------------------------- explicit strategies


def test_injected_strategy_selects_injected_rows(params, train):
    choice = choose(with_forget(params, strategy="injected"), train)
    assert choice.rows.tolist() == [7, 8, 9]
    assert choice.evidence == [] and choice.reproductions == []


def test_label_strategy_selects_rows_with_label(params, train):
    assert choose(with_forget(params, strategy="label", label=0), train).rows.tolist() == [0, 3, 6]


def test_indices_strategy_sorts_and_deduplicates(params, train):
    rows = choose(with_forget(params, strategy="indices", indices=[9, 3, 1, 3]), train).rows
    assert rows.tolist() == [1, 3, 9]


def test_indices_out_of_range_names_key(params, train):
    with pytest.raises(UserError, match="forget.indices") as info:
        choose(with_forget(params, strategy="indices", indices=[0, 10]), train)
    assert "10" in str(info.value)


def test_label_without_rows_is_empty_error(params, train):
    with pytest.raises(UserError, match="empty"):
        choose(with_forget(params, strategy="label", label=7), train)


def test_injected_without_injected_rows_is_empty_error(params, train):
    train["injected"][:] = -1
    with pytest.raises(UserError, match="empty"):
        choose(with_forget(params, strategy="injected"), train)


def test_selecting_every_row_is_an_error(params, train):
    with pytest.raises(UserError, match="retain set"):
        choose(with_forget(params, strategy="indices", indices=list(range(10))), train)
    train["labels"][:] = 4
    with pytest.raises(UserError, match="retain set"):
        choose(with_forget(params, strategy="label", label=4), train)


def test_files_strategy_selects_rows_by_name(params, train):
    assert choose(with_forget(params, strategy="files", files=["tshirt"]), train).rows.tolist() == [7, 8, 9]
    rows = choose(with_forget(params, strategy="files", files=["img-5", "img-1", "img-5"]), train).rows
    assert rows.tolist() == [1, 5]
    rows = choose(with_forget(params, strategy="files", files=["img-0", "tshirt"]), train).rows
    assert rows.tolist() == [0, 7, 8, 9]


def test_files_strategy_unknown_name_names_key(params, train):
    with pytest.raises(UserError, match=r"forget\.files") as info:
        choose(with_forget(params, strategy="files", files=["img-2", "no-such-image.png"]), train)
    assert "no-such-image.png" in str(info.value)


# ---------------------------------------------------------------- random


@pytest.fixture
def with_copies(rng):
    """12 distinct images; rows 12..14 copy row 2, rows 15..16 copy row 9: 17 rows."""
    images = random_images(rng, 12, (1, 4, 4))
    images = np.concatenate([images, images[[2, 2, 2, 9, 9]]])
    return train_dict(images)


def random_params(params, k, seed):
    return with_forget(params, strategy="random", random={"k": k, "seed": seed})


@pytest.mark.parametrize("k", [1, 3, 11])
def test_random_selects_k_distinct_images_with_all_copies(params, with_copies, k):
    images = with_copies["images"]
    choice = choose(random_params(params, k, 0), with_copies)
    rows = choice.rows.tolist()
    assert rows == sorted(set(rows))
    assert len({images[r].tobytes() for r in rows}) == k
    assert rows == copies_of(images, rows)  # every identical copy, nothing else
    # one evidence line per distinct image, naming its first row
    of, first = distinct_of(images)
    assert sorted(e["row"] for e in choice.evidence) == sorted(first[np.unique(of[rows])].tolist())


def test_random_is_seeded(params, with_copies):
    once = choose(random_params(params, 4, 7), with_copies).rows
    again = choose(random_params(params, 4, 7), with_copies).rows
    np.testing.assert_array_equal(once, again)
    others = {tuple(choose(random_params(params, 4, seed), with_copies).rows.tolist()) for seed in range(8)}
    assert len(others) > 1


def test_random_k_at_least_distinct_images_names_key(params, with_copies):
    for k in (12, 13):  # 12 distinct images among 17 rows
        with pytest.raises(UserError, match=r"forget\.random\.k"):
            choose(random_params(params, k, 0), with_copies)


# ---------------------------------------------------------------- memorized


def memorized_params(params, **cfg):
    return with_forget(params, strategy="memorized", memorized={**MEMORIZED, **cfg})


def noisy_copies(image, n, rng, sigma=0.01):
    """``n`` samples in [0, 1] that are ``image`` (uint8) plus small Gaussian noise."""
    x = image.astype(np.float32)[None] / 255.0
    return np.clip(x + rng.normal(0, sigma, size=(n, *image.shape)), 0, 1).astype(np.float32)


@pytest.fixture
def mem_train(rng):
    """30 distinct random 8x8 images; rows 30 and 31 are identical copies of row 4."""
    images = random_images(rng, 30)
    return train_dict(np.concatenate([images, images[[4, 4]]]))


def reference_memorized(images, samples, threshold):
    """Brute force of the definition: {first row of a distinct image: (its sample indices, their
    distances, d_NN of the image)}."""
    _, first = distinct_of(images)
    x = unit(images[first])
    d_xx = distances(x, x)
    np.fill_diagonal(d_xx, np.inf)
    d_nn = d_xx.min(1)
    d_sx = distances(samples.reshape(len(samples), -1), x)
    nearest, dist = d_sx.argmin(1), d_sx.min(1)
    out = {}
    for s in range(len(samples)):
        if dist[s] < threshold * d_nn[nearest[s]]:
            out.setdefault(int(first[nearest[s]]), []).append(s)
    return {r: (np.array(s), dist[s], d_nn[list(first).index(r)]) for r, s in out.items()}


def test_memorized_selects_the_reproduced_image_and_its_copies(params, mem_train, rng):
    images = mem_train["images"]
    samples = np.concatenate([rng.random((6, 1, 8, 8), dtype=np.float32), noisy_copies(images[4], 4, rng)])
    samples = samples[rng.permutation(10)]
    ref = reference_memorized(images, samples, 0.5)
    assert list(ref) == [4] and len(ref[4][0]) == 4  # the plant is what it should be
    choice = choose(memorized_params(params), mem_train, samples)
    assert choice.rows.tolist() == [4, 30, 31]
    assert len(choice.evidence) == 1
    e = choice.evidence[0]
    which, dist, d_nn = ref[4]
    assert e["row"] == 4 and e["reproductions"] == 4
    assert e["closest"] == pytest.approx(dist.min(), abs=1e-4)
    assert e["median_distance"] == pytest.approx(np.median(dist), abs=1e-4)
    assert e["nearest_other_image"] == pytest.approx(d_nn, abs=1e-4)
    assert e["threshold"] == pytest.approx(0.5 * d_nn, abs=1e-4)
    # the reproducing samples, closest first
    assert len(choice.reproductions) == 1
    assert choice.reproductions[0].tolist() == which[np.argsort(dist, kind="stable")].tolist()


def test_memorized_ranks_by_reproductions(params, mem_train, rng):
    images = mem_train["images"]
    samples = np.concatenate([noisy_copies(images[2], 3, rng), rng.random((4, 1, 8, 8), dtype=np.float32),
                              noisy_copies(images[17], 5, rng), noisy_copies(images[9], 1, rng)])
    ref = reference_memorized(images, samples, 0.5)
    assert {r: len(s[0]) for r, s in ref.items()} == {2: 3, 17: 5, 9: 1}
    choice = choose_memorized(MEMORIZED, images, samples)
    assert [e["row"] for e in choice.evidence] == [17, 2, 9]
    assert [e["reproductions"] for e in choice.evidence] == [5, 3, 1]
    assert choice.rows.tolist() == [2, 9, 17]
    for e, which in zip(choice.evidence, choice.reproductions):
        assert sorted(which.tolist()) == sorted(ref[e["row"]][0].tolist())
        assert e["closest"] == pytest.approx(ref[e["row"]][1].min(), abs=1e-4)
    # min_count leaves out images reproduced fewer times
    choice = choose_memorized({**MEMORIZED, "min_count": 3}, images, samples)
    assert [e["row"] for e in choice.evidence] == [17, 2] and choice.rows.tolist() == [2, 17]
    choice = choose_memorized({**MEMORIZED, "min_count": 4}, images, samples)
    assert [e["row"] for e in choice.evidence] == [17] and choice.rows.tolist() == [17]
    # max_images keeps the most reproduced
    choice = choose_memorized({**MEMORIZED, "max_images": 2}, images, samples)
    assert [e["row"] for e in choice.evidence] == [17, 2] and choice.rows.tolist() == [2, 17]
    assert len(choice.reproductions) == 2
    choice = choose(memorized_params(params, max_images=1), mem_train, samples)
    assert choice.rows.tolist() == [17]


def test_memorized_takes_identical_copies_of_a_reproduced_image(params, mem_train, rng):
    images = mem_train["images"]
    samples = np.concatenate([noisy_copies(images[31], 3, rng), noisy_copies(images[0], 2, rng)])
    choice = choose(memorized_params(params), mem_train, samples)
    assert [e["row"] for e in choice.evidence] == [4, 0]  # a copy's group is named by its first row
    assert choice.evidence[0]["reproductions"] == 3
    assert choice.rows.tolist() == [0, 4, 30, 31]


def test_memorized_threshold_is_relative_to_nearest_neighbour(params, mem_train, rng):
    images = mem_train["images"]
    x = unit(images[:30])
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)
    d_nn = d.min(1)[4]
    # a sample on the segment from image 4 towards a far point, at 0.4 and 0.6 x d_NN(image 4)
    direction = rng.normal(size=64)
    direction /= np.linalg.norm(direction)
    near = (x[4] + 0.4 * d_nn * direction).reshape(1, 1, 8, 8).astype(np.float32)
    far = (x[4] + 0.6 * d_nn * direction).reshape(1, 1, 8, 8).astype(np.float32)
    assert distances(far.reshape(1, -1), x).argmin() == 4
    assert choose_memorized(MEMORIZED, images, near).rows.tolist() == [4, 30, 31]
    assert len(choose_memorized(MEMORIZED, images, far).rows) == 0
    assert choose_memorized({**MEMORIZED, "threshold": 0.7}, images, far).rows.tolist() == [4, 30, 31]


def test_memorized_without_reproductions_is_empty(params, mem_train, rng):
    samples = rng.random((12, 1, 8, 8), dtype=np.float32)
    assert reference_memorized(mem_train["images"], samples, 0.5) == {}
    choice = choose_memorized(MEMORIZED, mem_train["images"], samples)
    assert len(choice.rows) == 0 and choice.evidence == [] and choice.reproductions == []
    with pytest.raises(UserError, match="empty"):
        choose(memorized_params(params), mem_train, samples)


def test_memorized_needs_two_distinct_images(rng):
    images = np.repeat(random_images(rng, 1), 3, axis=0)
    with pytest.raises(UserError, match="two distinct"):
        choose_memorized(MEMORIZED, images, noisy_copies(images[0], 2, rng))


# ---------------------------------------------------------------- duplicated


def perturb(image, rng, n_pixels=4, step=3):
    out = image.astype(np.int64).copy().reshape(-1)
    where = rng.choice(out.size, n_pixels, replace=False)
    out[where] = np.where(out[where] > 127, out[where] - step, out[where] + step)
    return out.reshape(image.shape).astype(np.uint8)


@pytest.fixture
def dup_train(rng):
    """30 random images, among them near-duplicate clusters: A = rows 3, 12, 25 (3 distinct images,
    3 rows), B = row 7 and its identical copies 30, 31, 32 (1 image, 4 rows), C = rows 18, 27 (2 rows)."""
    images = random_images(rng, 30)
    images[12], images[25] = perturb(images[3], rng), perturb(images[3], rng)
    images[27] = perturb(images[18], rng)
    return train_dict(np.concatenate([images, images[[7, 7, 7]]]))


CLUSTERS = {"A": [3, 12, 25], "B": [7, 30, 31, 32], "C": [18, 27]}


def reference_clusters(images, threshold):
    """Brute force: connected components (union-find) of distinct images closer than threshold x the
    median nearest-other distance, as {frozenset of rows (all copies): number of distinct images}."""
    of, first = distinct_of(images)
    x = unit(images[first])
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)
    radius = threshold * np.median(d.min(1))
    parent = list(range(len(first)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(d < radius)):
        parent[root(i)] = root(j)
    members = {}
    for g in range(len(first)):
        members.setdefault(root(g), []).append(g)
    return {frozenset(np.flatnonzero(np.isin(of, m)).tolist()): len(m) for m in members.values()}


def dup_params(params, **cfg):
    return with_forget(params, strategy="duplicated", duplicated={**DUPLICATED, **cfg})


def test_duplicated_finds_planted_clusters(params, dup_train):
    images = dup_train["images"]
    ref = reference_clusters(images, DUPLICATED["threshold"])
    multi = {rows: n for rows, n in ref.items() if len(rows) > 1}
    assert multi == {frozenset(CLUSTERS["A"]): 3, frozenset(CLUSTERS["B"]): 1, frozenset(CLUSTERS["C"]): 2}
    choice = choose(dup_params(params), dup_train)
    assert choice.rows.tolist() == sorted(CLUSTERS["A"] + CLUSTERS["B"] + CLUSTERS["C"])
    assert choice.reproductions == []
    # evidence: one line per distinct image, clusters largest first (rows, counting identical copies)
    by_cluster = {}
    for e in choice.evidence:
        by_cluster.setdefault(e["cluster"], []).append(e)
    assert sorted(by_cluster) == [0, 1, 2]
    assert sorted(e["row"] for e in by_cluster[0]) == [7]
    assert sorted(e["row"] for e in by_cluster[1]) == [3, 12, 25]
    assert sorted(e["row"] for e in by_cluster[2]) == [18, 27]
    for c, (rows, images_in) in enumerate([(4, 1), (3, 3), (2, 2)]):
        assert all(e["cluster_rows"] == rows and e["cluster_images"] == images_in for e in by_cluster[c])
    assert [e["cluster"] for e in choice.evidence] == sorted(e["cluster"] for e in choice.evidence)


def test_duplicated_min_size_and_max_clusters(params, dup_train):
    rows = choose(dup_params(params, min_size=3), dup_train).rows
    assert rows.tolist() == sorted(CLUSTERS["A"] + CLUSTERS["B"])
    rows = choose(dup_params(params, min_size=4), dup_train).rows
    assert rows.tolist() == CLUSTERS["B"]
    choice = choose(dup_params(params, max_clusters=2), dup_train)
    assert choice.rows.tolist() == sorted(CLUSTERS["A"] + CLUSTERS["B"])
    assert {e["cluster"] for e in choice.evidence} == {0, 1}
    rows = choose(dup_params(params, max_clusters=1), dup_train).rows
    assert rows.tolist() == CLUSTERS["B"]
    with pytest.raises(UserError, match="empty"):
        choose(dup_params(params, min_size=5), dup_train)


def test_duplicated_threshold_scales_the_radius(params, dup_train):
    """A radius above every distance joins everything: every row, so the retain set would be empty."""
    images = dup_train["images"]
    assert len(reference_clusters(images, 100.0)) == 1
    with pytest.raises(UserError, match="retain set"):
        choose(dup_params(params, threshold=100.0), dup_train)
    # a radius below every planted distance leaves only the identical copies
    assert choose(dup_params(params, threshold=1e-4), dup_train).rows.tolist() == CLUSTERS["B"]


# ---------------------------------------------------------------- grouping and R = X \ A


def test_group_identical_matches_brute_force(rng):
    uniques = rng.integers(0, 256, size=(5, 1, 4, 4), dtype=np.uint8)
    which = np.array([3, 0, 3, 1, 4, 4, 2, 3, 0, 1, 4, 2])
    images = uniques[which]
    group, distinct = group_identical(images)
    assert group.shape == (len(images),)
    n = len(images)
    for i in range(n):
        for j in range(n):
            same = images[i].tobytes() == images[j].tobytes()
            assert (group[i] == group[j]) == same, (i, j)
    # one representative per group, and group g's representative is in group g
    assert len(distinct) == len({im.tobytes() for im in images}) == 5
    assert sorted(group[distinct].tolist()) == list(range(5))
    for g, row in enumerate(distinct):
        assert group[row] == g
    # every row is byte-identical to the representative of its group
    for i in range(n):
        assert np.array_equal(images[i], images[distinct[group[i]]])


def test_group_identical_numbers_groups_by_their_first_row_across_blocks(rng, monkeypatch):
    """Groups in the order of their first rows, however the pass over the images is cut in blocks."""
    import pipeline.data.sets as sets

    uniques = rng.integers(0, 256, size=(4, 1, 4, 4), dtype=np.uint8)
    which = np.array([2, 2, 0, 3, 0, 1, 2, 3])
    for block_bytes in (16, 48, 2**20):
        monkeypatch.setattr(sets, "BLOCK_BYTES", block_bytes)
        group, first = group_identical(uniques[which])
        assert first.tolist() == [0, 2, 3, 5]
        assert group.tolist() == [0, 0, 1, 2, 1, 3, 0, 2]


def test_group_identical_all_distinct_and_all_same(rng):
    images = rng.integers(0, 256, size=(6, 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(6)  # guarantee distinct
    group, distinct = group_identical(images)
    assert len(set(group.tolist())) == 6 and len(distinct) == 6
    same = np.repeat(images[:1], 4, axis=0)
    group, distinct = group_identical(same)
    assert group.tolist() == [0, 0, 0, 0] and len(distinct) == 1


def test_retain_rows_is_complement():
    forget = np.array([7, 2, 5])
    retain = retain_rows(10, forget)
    assert retain.tolist() == [0, 1, 3, 4, 6, 8, 9]
    assert set(retain.tolist()) | set(forget.tolist()) == set(range(10))
    assert not set(retain.tolist()) & set(forget.tolist())


# ---------------------------------------------------------------- the forget_set stage


def write_stage_inputs(tmp_path, params, rng, **forget):
    """20 random 8x8 base images, then 3 copies of injected image 0 and 2 of injected image 1."""
    base = random_images(rng, 20)
    injected_images = random_images(rng, 2)
    images = np.concatenate([base, injected_images[[0, 0, 0, 1, 1]]])
    names = np.array([f"mnist-train-{i:05d}" for i in range(20)] + ["tshirt"] * 3 + ["logo.png"] * 2)
    injected = np.array([-1] * 20 + [0, 0, 0, 1, 1], dtype=np.int64)
    labels = np.array(list(range(10)) * 2 + [-1] * 5, dtype=np.int64)
    save_npz(tmp_path / "train.npz", images=images, labels=labels, injected=injected, names=names)
    params["forget"] = {"strategy": "injected", "label": None, "indices": None, **forget}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return train_dict(images, names, injected) | {"labels": labels}


def forget_argv(tmp_path, model=None):
    argv = ["--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "train.npz"),
            "--out", str(tmp_path / "forget.npz"), "--table", str(tmp_path / "forget.csv"),
            "--png", str(tmp_path / "forget.png")]
    return argv + (["--model", str(model)] if model else [])


def read_table(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def no_outputs(tmp_path):
    return not any((tmp_path / name).exists() for name in ("forget.npz", "forget.csv", "forget.png"))


def test_forget_cli_injected_writes_set_table_and_png(tmp_path, params, rng):
    train = write_stage_inputs(tmp_path, params, rng)
    main(forget_argv(tmp_path))
    forget = load_npz(tmp_path / "forget.npz", ("rows", "group", "distinct"))
    rows, group, distinct = forget["rows"], forget["group"], forget["distinct"]
    assert rows.tolist() == [20, 21, 22, 23, 24]
    images = train["images"]
    for i, a in enumerate(rows):
        for j, b in enumerate(rows):
            assert (group[i] == group[j]) == (images[a].tobytes() == images[b].tobytes())
    assert sorted(distinct.tolist()) == [20, 23]
    for i, r in enumerate(rows):
        assert np.array_equal(images[r], images[distinct[group[i]]])
    table = read_table(tmp_path / "forget.csv")
    assert len(table) == 2
    by_row = {int(line["row"]): line for line in table}
    assert by_row[20]["name"] == "tshirt" and by_row[20]["label"] == "-1" and by_row[20]["copies"] == "3"
    assert by_row[23]["name"] == "logo.png" and by_row[23]["label"] == "-1" and by_row[23]["copies"] == "2"
    assert is_png(tmp_path / "forget.png")


def test_forget_cli_random_table_has_one_line_per_distinct_image(tmp_path, params, rng):
    train = write_stage_inputs(tmp_path, params, rng, strategy="random", random={"k": 6, "seed": 3})
    main(forget_argv(tmp_path))
    rows = load_npz(tmp_path / "forget.npz", ("rows",))["rows"].tolist()
    assert rows == copies_of(train["images"], rows)
    table = read_table(tmp_path / "forget.csv")
    assert len(table) == 6
    assert sum(int(line["copies"]) for line in table) == len(rows)
    for line in table:
        r = int(line["row"])
        assert r in rows and line["name"] == train["names"][r] and int(line["label"]) == train["labels"][r]
        assert int(line["copies"]) == len(copies_of(train["images"], [r]))
    assert is_png(tmp_path / "forget.png")


def test_forget_cli_warns_about_copies_left_in_retain_set(tmp_path, params, rng, capsys):
    write_stage_inputs(tmp_path, params, rng, strategy="indices", indices=[21])
    main(forget_argv(tmp_path))
    assert load_npz(tmp_path / "forget.npz", ("rows",))["rows"].tolist() == [21]
    assert "2 identical copies" in capsys.readouterr().err


def test_forget_cli_memorized_without_model_exits_2(tmp_path, params, rng, capsys):
    write_stage_inputs(tmp_path, params, rng, strategy="memorized", memorized=MEMORIZED)
    with pytest.raises(SystemExit) as info:
        main(forget_argv(tmp_path))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--model" in err
    assert no_outputs(tmp_path)


def test_forget_cli_memorized_untrained_model_selects_nothing(tmp_path, params, rng, capsys, unet, scheduler):
    write_stage_inputs(tmp_path, params, rng, strategy="memorized", memorized=MEMORIZED)
    save_model(tmp_path / "model", unet, scheduler)
    with pytest.raises(SystemExit) as info:
        main(forget_argv(tmp_path, tmp_path / "model"))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "empty" in err
    assert "0 of 8 samples reproduce" in err
    assert no_outputs(tmp_path)


def test_forget_cli_memorized_writes_evidence(tmp_path, params, rng, monkeypatch):
    train = write_stage_inputs(tmp_path, params, rng, strategy="memorized", memorized=MEMORIZED)
    images = train["images"]
    samples = np.concatenate([noisy_copies(images[21], 3, rng), rng.random((5, 1, 8, 8), dtype=np.float32)])
    monkeypatch.setattr(forget_set_stage, "memorization_samples", lambda params, model: samples)
    main(forget_argv(tmp_path))
    assert load_npz(tmp_path / "forget.npz", ("rows",))["rows"].tolist() == [20, 21, 22]
    table = read_table(tmp_path / "forget.csv")
    assert len(table) == 1
    line = table[0]
    assert {"row", "name", "label", "copies", "reproductions", "closest"} <= set(line)
    assert line["row"] == "20" and line["name"] == "tshirt" and line["copies"] == "3"
    assert line["reproductions"] == "3"
    closest = distances(samples[:3].reshape(3, -1), unit(images[20:21])).min()
    assert float(line["closest"]) == pytest.approx(closest, abs=1e-4)
    assert is_png(tmp_path / "forget.png")


# --- the forget set of a per-image run (experiment.per_image) -------------------------------------------


def test_forget_of_a_per_image_run_is_one_image_with_its_copies(rng):
    """Distinct forget images in row order: row 2 (image 0), rows 5+8 (image 1, identical copies),
    row 6 (image 2); groups as group_identical numbers them."""
    from pipeline.data.sets import forget_of

    images = rng.integers(0, 256, size=(10, 1, 4, 4), dtype=np.uint8)
    images[8] = images[5]
    rows = np.array([2, 5, 6, 8])
    group, first = group_identical(images[rows])
    forget = {"rows": rows, "group": group, "distinct": rows[first], "request": np.zeros(len(first), dtype=np.int64)}
    knn = {"neighbours": np.arange(len(first) * 3).reshape(-1, 3), "distances": np.ones((len(first), 3))}
    assert forget_of("pretrained", forget, knn) == (forget, knn)
    assert forget_of("retrack-s0", forget)[0] is forget
    for image, (own_rows, representative) in enumerate([([2], 2), ([5, 8], 5), ([6], 6)]):
        one, neighbours = forget_of(f"retrack-s1-i{image}", forget, knn)
        assert one["rows"].tolist() == own_rows and one["distinct"].tolist() == [representative]
        assert one["group"].tolist() == [0] * len(own_rows)
        g = int(group[rows.tolist().index(representative)])
        assert neighbours["neighbours"].tolist() == [knn["neighbours"][g].tolist()]
        assert sorted(retain_rows(10, one["rows"]).tolist() + own_rows) == list(range(10))
    with pytest.raises(UserError, match="forget image 3 asked for, but the forget set has 3 distinct images"):
        forget_of("naive-s0-i3", forget)


def test_a_step_of_a_sequence_unlearns_its_request_and_keeps_later_ones_in_its_retain_set():
    """Request 0 took rows 2 and 9 (identical), request 1 row 5, request 2 row 7. Step 2 (the
    second request) unlearns row 5 alone; its retain set lacks rows 2, 9 and 5 but holds row 7, which
    nobody had asked to delete yet; every step is judged on the whole forget set."""
    from pipeline.data.sets import deleted_rows, forget_of, unlearned_by
    from pipeline.params.runs import Run

    rows = np.array([2, 5, 7, 9])
    forget = {"rows": rows, "group": np.array([2, 0, 1, 2]), "distinct": np.array([5, 7, 2]),
              "request": np.array([1, 2, 0])}
    knn = {"neighbours": np.array([[50], [70], [20]]), "distances": np.ones((3, 1))}
    for step, own, gone in [(1, [2, 9], [2, 9]), (2, [5], [2, 5, 9]), (3, [7], [2, 5, 7, 9])]:
        run = Run("naive", 0, request=step)
        part, near = unlearned_by(run, forget, knn)
        assert part["rows"].tolist() == own and part["distinct"].tolist() == own[:1]
        assert part["group"].tolist() == [0] * len(own) and near["neighbours"].tolist() == [[own[0] * 10]]
        assert deleted_rows(run, forget).tolist() == gone
        assert forget_of(run.name, forget, knn) == (forget, knn)
    assert deleted_rows(Run("naive", 0), forget).tolist() == rows.tolist()  # all at once: every request
