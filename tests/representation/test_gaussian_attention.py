"""Tests of the Gaussian attention model / TransGaussian against closed forms and slow loops."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from tomioka_jax.representation import _gaussian_attention as ga


def _np_log_normal(x, mean, cov):
  """Slow reference: the full-matrix Gaussian log-density."""
  d = len(x)
  diff = np.asarray(x) - np.asarray(mean)
  _, logdet = np.linalg.slogdet(cov)
  return -0.5 * (d * math.log(2 * math.pi) + logdet + diff @ np.linalg.inv(cov) @ diff)


def _np_normal_pdf(x, mean, var):
  return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


# ------------------------------------------------------------------------------------ the kernels


def test_score_equals_numpy_gaussian_log_density():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    for _ in range(5):
      s, r, o = rng.normal(size=(3, 4))
      v = rng.uniform(0.1, 3.0, size=4)
      ours = float(ga.trans_gaussian_score(s, r, v, o))
      assert ours == pytest.approx(_np_log_normal(o, s + r, np.diag(v)), rel=1e-12)
    # TransE: minus the Euclidean distance, the same for every relation (fixed scale).
    assert float(ga.trans_e_score(s, r, o)) == pytest.approx(-np.linalg.norm(s + r - o),
                                                             rel=1e-12)


def test_path_composition_is_the_convolution_of_the_relations_gaussians():
  """Following r1 then r2 from the anchor: the density of the end point is the convolution
  N(a + d1, v1) * N(d2, v2), computed on a grid, which must equal N(a + d1 + d2, v1 + v2)."""
  with jax.enable_x64(True):
    a, d1, d2, v1, v2 = 0.3, 1.2, -0.5, 0.4, 0.9
    h = 0.005
    grid = h * np.arange(-2400, 2401)  # odd and symmetric: "same" keeps x = 0 at the centre
    conv = np.convolve(_np_normal_pdf(grid, a + d1, v1), _np_normal_pdf(grid, d2, v2),
                       mode="same") * h
    mean, var = ga.compose_path(jnp.array([a]), jnp.array([[d1], [d2]]),
                                jnp.array([[v1], [v2]]))
    np.testing.assert_allclose(conv, _np_normal_pdf(grid, float(mean[0]), float(var[0])),
                               atol=2e-5)
    # A masked step is no step.
    m2, v2_ = ga.compose_path(jnp.array([a]), jnp.array([[d1], [d2]]), jnp.array([[v1], [v2]]),
                              mask=jnp.array([1.0, 0.0]))
    assert (float(m2[0]), float(v2_[0])) == pytest.approx((a + d1, v1))


def test_conjunction_is_the_normalized_product_of_gaussians():
  """prod_c N(x; m_c, v_c) = Z N(x; m, v): the grid integral of the product is Z, the
  product's moments are the precision-weighted ones, and the score is the sum of logs."""
  with jax.enable_x64(True):
    m = np.array([[0.5], [-1.0], [2.0]])
    v = np.array([[0.7], [1.5], [0.4]])
    mean, var, log_z = ga.gaussian_conjunction(m, v)
    h = 1e-3
    grid = np.arange(-15, 15, h)
    product = np.prod([_np_normal_pdf(grid, m[c, 0], v[c, 0]) for c in range(3)], axis=0)
    assert np.sum(product) * h == pytest.approx(math.exp(float(log_z)), rel=1e-8)
    prec = np.sum(1 / v)
    assert float(var[0]) == pytest.approx(1 / prec, rel=1e-12)
    assert float(mean[0]) == pytest.approx(np.sum(m[:, 0] / v[:, 0]) / prec, rel=1e-12)
    # Normalized product = the product density divided by Z, at every grid point.
    np.testing.assert_allclose(product / math.exp(float(log_z)),
                               _np_normal_pdf(grid, float(mean[0]), float(var[0])), atol=1e-10)
    # Two factors: Z = N(m1; m2, v1 + v2).
    _, _, log_z2 = ga.gaussian_conjunction(m[:2], v[:2])
    assert float(log_z2) == pytest.approx(
        math.log(_np_normal_pdf(m[0, 0], m[1, 0], v[0, 0] + v[1, 0])), rel=1e-12)
    # In d = 3 with a mask: the score equals the sum of the present conjuncts' log-densities.
    rng = np.random.default_rng(1)
    means, variances = rng.normal(size=(3, 3)), rng.uniform(0.2, 2.0, size=(3, 3))
    x = rng.normal(size=3)
    mask = np.array([1.0, 0.0, 1.0])
    ref = sum(_np_log_normal(x, means[c], np.diag(variances[c])) for c in (0, 2))
    assert float(ga.conjunction_log_score(x, means, variances, mask)) == pytest.approx(
        ref, rel=1e-12)


def test_gaussian_attention_is_a_softmax_of_mahalanobis_distances():
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    memory, m = rng.normal(size=(6, 3)), rng.normal(size=3)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + 0.5 * np.eye(3)
    logits = np.array([-0.5 * (e - m) @ np.linalg.inv(cov) @ (e - m) for e in memory])
    ref = np.exp(logits - logits.max())
    np.testing.assert_allclose(ga.gaussian_attention(memory, m, cov), ref / ref.sum(),
                               rtol=1e-10)
    diag = rng.uniform(0.5, 2.0, size=3)
    np.testing.assert_allclose(ga.gaussian_attention(memory, m, diag),
                               ga.gaussian_attention(memory, m, np.diag(diag)), rtol=1e-10)
    # A broad covariance spreads the attention: its entropy grows with the scale.
    ent = [float(-jnp.sum(w * jnp.log(w))) for w in
           (ga.gaussian_attention(memory, m, s * np.ones(3)) for s in (0.01, 1.0, 100.0))]
    assert ent[0] < ent[1] < ent[2] <= math.log(6) + 1e-12


# ------------------------------------------------------------------------------------ the models


def test_models_score_queries_as_the_kernels_say():
  with jax.enable_x64(True):
    model = ga.TransGaussian(7, 3, 4, init_log_var=0.0, rngs=nnx.Rngs(0))
    model.relation_log_var[...] = jnp.asarray(np.random.default_rng(3).normal(size=(3, 4)))
    mu = np.asarray(model.entity_mean[...])
    dl = np.asarray(model.relation_offset[...])
    var = np.exp(np.asarray(model.relation_log_var[...]))
    # Rows: a single relation, a 2-hop path, a conjunction of a path and a relation.
    anchors = jnp.array([[1, -1], [2, -1], [0, 4]])
    relations = jnp.array([[[0, -1], [-1, -1]], [[1, 2], [-1, -1]], [[2, 0], [1, -1]]])
    scores = np.asarray(model.score_all(anchors, relations))
    for o in range(7):
      assert scores[0, o] == pytest.approx(
          float(ga.trans_gaussian_score(mu[1], dl[0], var[0], mu[o])), rel=1e-10)
      assert scores[1, o] == pytest.approx(
          _np_log_normal(mu[o], mu[2] + dl[1] + dl[2], np.diag(var[1] + var[2])), rel=1e-10)
      assert scores[2, o] == pytest.approx(
          _np_log_normal(mu[o], mu[0] + dl[2] + dl[0], np.diag(var[2] + var[0])) +
          _np_log_normal(mu[o], mu[4] + dl[1], np.diag(var[1])), rel=1e-10)
    cand = jnp.array([[3, 5], [0, 6], [1, 1]])
    np.testing.assert_allclose(model.score(anchors, relations, cand),
                               np.take_along_axis(scores, np.asarray(cand), 1), rtol=1e-12)
    te = ga.TransE(7, 3, 4, rngs=nnx.Rngs(1))
    mu, dl = np.asarray(te.entity_mean[...]), np.asarray(te.relation_offset[...])
    s = np.asarray(te.score_all(anchors, relations))
    ref = -(np.linalg.norm(mu[0] + dl[2] + dl[0] - mu, axis=1) +
            np.linalg.norm(mu[4] + dl[1] - mu, axis=1))
    np.testing.assert_allclose(s[2], ref, rtol=1e-10)


def test_gradients_match_finite_differences():
  with jax.enable_x64(True):
    model = ga.TransGaussian(6, 3, 3, init_scale=0.5, rngs=nnx.Rngs(2))
    graphdef, params = nnx.split(model)
    batch = {"anchors": jnp.array([[0, 3], [1, -1]]),
             "relations": jnp.array([[[0, 1], [2, -1]], [[1, -1], [-1, -1]]]),
             "answers": jnp.array([4, 5])}

    @jax.jit
    def loss(p):
      return ga.kb_margin_ranking_loss(nnx.merge(graphdef, p), batch, jax.random.key(0),
                                       num_negatives=3, margin=5.0)[0]

    check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)
    te = ga.TransE(6, 3, 3, init_scale=0.5, rngs=nnx.Rngs(3))
    g2, p2 = nnx.split(te)
    total = jax.jit(lambda p: jnp.sum(nnx.merge(g2, p).score_all(batch["anchors"],
                                                                  batch["relations"])))
    check_grads(total, (p2,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- ranking


def _slow_rank(scores, target, known):
  """Python loop reference, ties counted half, known answers skipped."""
  greater = ties = 0
  for e, s in enumerate(scores):
    if e == target or e in set(known):
      continue
    greater += s > scores[target]
    ties += s == scores[target]
  return 1 + greater + 0.5 * ties


def test_filtered_rank_equals_the_slow_loop_with_ties():
  rng = np.random.default_rng(4)
  scores = rng.integers(0, 5, size=(40, 30)).astype(np.float32)  # many ties
  targets = rng.integers(0, 30, size=40)
  known = np.full((40, 6), -1)
  for i in range(40):
    k = rng.integers(0, 7)
    known[i, :k] = rng.choice(30, k, replace=False)
  ours = jax.vmap(ga.filtered_rank)(scores, targets, known)
  ref = [_slow_rank(scores[i], targets[i], [k for k in known[i] if k >= 0]) for i in range(40)]
  np.testing.assert_array_equal(np.asarray(ours), ref)


def test_filtering_removes_exactly_the_known_answers():
  scores = jnp.array([5.0, 4.0, 3.0, 2.0, 1.0])
  # Entities 0 and 1 outscore the target 3; entity 2 too.
  assert float(ga.filtered_rank(scores, 3, jnp.array([-1, -1]))) == 4.0
  assert float(ga.filtered_rank(scores, 3, jnp.array([0, -1]))) == 3.0
  assert float(ga.filtered_rank(scores, 3, jnp.array([0, 1]))) == 2.0
  assert float(ga.filtered_rank(scores, 3, jnp.array([0, 1, 2, 3]))) == 1.0  # target listed
  # A known answer scoring below the target changes nothing.
  assert float(ga.filtered_rank(scores, 3, jnp.array([4, -1]))) == 4.0
  # NaN: a NaN competitor counts above the target, a NaN target ranks last.
  assert float(ga.filtered_rank(scores.at[4].set(jnp.nan), 3, jnp.array([-1]))) == 5.0
  assert float(ga.filtered_rank(scores.at[3].set(jnp.nan), 3, jnp.array([0]))) == 4.0


@pytest.fixture(scope="module")
def small_kb():
  kb = ga.synthetic_soccer_kb(0, num_players=40, num_countries=3, clubs_per_country=2)
  train_t, test_t = ga.split_kb(kb, 0.2, seed=0)
  return kb, train_t, test_t


def test_filtered_ranks_of_a_model_equal_the_loop_reference(small_kb):
  kb, train_t, test_t = small_kb
  parts = [ga.single_relation_queries(train_t, test_t)[1],
           ga.path_queries(kb, train_t, max_queries=60, seed=1)[1],
           ga.conjunctive_queries(kb, train_t, max_queries=60, seed=1)[1]]
  assert all(len(p.answers) > 0 for p in parts)
  width = max(p.known.shape[1] for p in parts)
  # One padded query set of all three kinds: one compilation per model.
  q = ga.KBQueries(*(np.concatenate(x) for x in
                     zip(*(ga._pad_queries(p, 2, 2, known=width) for p in parts))))
  for model in (ga.TransGaussian(kb.num_entities, kb.num_relations, 4, init_scale=1.0,
                                 rngs=nnx.Rngs(0)),
                ga.TransE(kb.num_entities, kb.num_relations, 4, init_scale=1.0,
                          rngs=nnx.Rngs(0))):
    ours = np.asarray(ga.filtered_ranks(model, q, chunk_size=7))
    assert len(q.answers) % 7  # the last chunk is padded
    scores = np.asarray(model.score_all(jnp.asarray(q.anchors), jnp.asarray(q.relations)))
    ref = [_slow_rank(scores[i], q.answers[i], [k for k in q.known[i] if k >= 0])
           for i in range(len(q.answers))]
    np.testing.assert_array_equal(ours, ref)
  m = ga.ranking_metrics(np.array([1.0, 1.5, 3.0, 20.0]))
  assert m == pytest.approx({"hits@1": 0.25, "hits@10": 0.75,
                             "mrr": (1 + 1 / 1.5 + 1 / 3 + 1 / 20) / 4})


# ------------------------------------------------------------------------------------------- data


def test_synthetic_kb_is_consistent_and_compositional():
  kb = ga.synthetic_soccer_kb(1, num_players=50, home_league=1.0)
  t = {tuple(x) for x in kb.triples.tolist()}
  assert len(t) == len(kb.triples)
  assert all((o, int(kb.inverse[r]), s) in t for s, r, o in t)  # every inverse present
  adj = {}
  for s, r, o in t:
    adj.setdefault((s, r), set()).add(o)
  players = [e for e, n in enumerate(kb.entity_names) if n.startswith("player")]
  for p in players:
    (country,), (club,), (_,) = adj[(p, 0)], adj[(p, 2)], adj[(p, 4)]
    assert adj[(club, 6)] == {country}  # home_league = 1: the path predicts the country


def test_split_holds_out_a_fact_with_its_inverse(small_kb):
  kb, train_t, test_t = small_kb
  assert len(train_t) + len(test_t) == len(kb.triples) and len(test_t) > 0
  train = {tuple(x) for x in train_t.tolist()}
  for s, r, o in test_t.tolist():
    assert (s, r, o) not in train and (o, int(kb.inverse[r]), s) not in train
  assert len(test_t) == 2 * round(0.2 * len(kb.triples) / 2)  # facts count once
  seen = {e for s, _, o in train for e in (s, o)}
  assert all(s in seen and o in seen for s, _, o in test_t.tolist())  # keep_entities
  # Without keep_entities an entity may lose all its facts (a player with all 3 held out).
  _, test_all = ga.split_kb(kb, 0.9, seed=0, keep_entities=False)
  _, test_keep = ga.split_kb(kb, 0.9, seed=0)
  assert len(test_keep) < len(test_all)


def test_path_and_conjunctive_answers_match_brute_force(small_kb):
  kb, train_t, _ = small_kb

  def follow(triples, starts, path):
    cur = set(starts)
    for r in path:
      cur = {o for s, rr, o in triples.tolist() if rr == r and s in cur}
    return cur

  p_train, p_test = ga.path_queries(kb, train_t, max_queries=40, seed=2)
  for i in range(0, len(p_test.answers), 7):
    a, path = int(p_test.anchors[i, 0]), p_test.relations[i, 0].tolist()
    full = follow(kb.triples, {a}, path)
    assert path[1] != kb.inverse[path[0]]
    assert set(p_test.known[i][p_test.known[i] >= 0].tolist()) == full
    assert p_test.answers[i] in full - follow(train_t, {a}, path)  # needs a held-out fact
  for i in range(0, len(p_train.answers), 7):
    a, path = int(p_train.anchors[i, 0]), p_train.relations[i, 0].tolist()
    assert p_train.answers[i] in follow(train_t, {a}, path)
  c_train, c_test = ga.conjunctive_queries(kb, train_t, max_queries=40, seed=2)
  for q, graph, member in ((c_test, kb.triples, True), (c_train, train_t, True)):
    for i in range(0, len(q.answers), 5):
      (a1, a2), (r1, r2) = q.anchors[i].tolist(), q.relations[i, :, 0].tolist()
      both = follow(graph, {a1}, [r1]) & follow(graph, {a2}, [r2])
      assert (q.answers[i] in both) == member
  for i in range(len(c_test.answers)):
    (a1, a2), (r1, r2) = c_test.anchors[i].tolist(), c_test.relations[i, :, 0].tolist()
    assert c_test.answers[i] not in follow(train_t, {a1}, [r1]) & follow(train_t, {a2}, [r2])


WORDNET_SAMPLE = """\
  1 This software and database is being provided to you, the LICENSEE, by
00000001 05 n 02 dog 0 domestic_dog 0 002 @ 00000002 n 0000 %p 00000004 n 0000 | a dog
00000002 05 n 01 canine 0 001 @ 00000003 n 0000 | a canine
00000003 05 n 01 animal 0 001 @ 00000005 n 0000 | an animal
00000004 08 n 01 tail 0 001 #p 00000001 n 0000 | a tail
00000005 03 n 01 entity 0 000 | the top
"""


def test_wordnet_reader_parses_pointers_and_filters(tmp_path):
  (tmp_path / "data.noun").write_text(WORDNET_SAMPLE)
  kb = ga.load_wordnet_kb(tmp_path)
  names = kb.entity_names
  assert names == ("dog.00000001", "canine.00000002", "animal.00000003", "tail.00000004",
                   "entity.00000005")
  rel = {n: i for i, n in enumerate(kb.relation_names)}
  t = {tuple(x) for x in kb.triples.tolist()}
  assert (0, rel["hypernym"], 1) in t and (1, rel["hyponym"], 0) in t
  assert (0, rel["part_holonym"], 3) not in t  # %p is the inverse symbol: read from its pair
  assert (0, rel["part_meronym"], 3) in t and (3, rel["part_holonym"], 0) in t
  assert len(t) == 2 * 4
  sub = ga.load_wordnet_kb(tmp_path, lexicographer_files=[5])
  assert sub.entity_names == names[:3] and len(sub.triples) == 4
  with pytest.raises(FileNotFoundError, match="install Debian's wordnet-base"):
    ga.load_wordnet_kb(tmp_path / "nowhere")


@pytest.mark.skipif(not os.path.exists("/usr/share/wordnet/data.noun"),
                    reason="WordNet 3.0 (Debian's wordnet-base) is not installed")
def test_real_wordnet_food_subset():
  kb = ga.load_wordnet_kb(lexicographer_files=[13])
  assert 1500 < kb.num_entities < 3000
  idx = {n.split(".")[0]: i for i, n in enumerate(kb.entity_names)}
  t = {tuple(x) for x in kb.triples.tolist()}
  rel = {n: i for i, n in enumerate(kb.relation_names)}
  assert any((idx["espresso"], rel["hypernym"], o) in t for o in [idx["coffee"]])


# --------------------------------------------------------------------------------------- training


def test_training_on_the_synthetic_kb_ranks_better_than_chance(small_kb):
  kb, train_t, test_t = small_kb
  train_q, _ = ga.single_relation_queries(train_t, test_t)
  path_train, _ = ga.path_queries(kb, train_t, max_queries=100, seed=0)
  for model in ("trans_gaussian", "trans_e"):
    graphdef, states, metrics = ga.train_kb_embedding(
        model, kb.num_entities, kb.num_relations, [train_q, path_train], dim=8, steps=300,
        batch_size=64, learning_rate=0.05, seeds=(0, 1))
    assert metrics["loss"].shape == (2, 300)
    assert np.all(np.asarray(metrics["loss"][:, -30:].mean(1)) <
                  0.5 * np.asarray(metrics["loss"][:, :30].mean(1)))
    for i in range(2):
      net = nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], states.params))
      mrr = ga.ranking_metrics(ga.filtered_ranks(net, train_q))["mrr"]
      assert mrr > 0.5, (model, i, mrr)  # random: about 2 / E = 0.03


# ------------------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_argument(small_kb):
  kb, train_t, test_t = small_kb
  z = jnp.zeros(3)
  with pytest.raises(ValueError, match="relation_variance must be positive.*-1"):
    ga.trans_gaussian_score(z, z, jnp.array([1.0, -1.0, 1.0]), z)
  with pytest.raises(ValueError, match="variances must be positive"):
    ga.gaussian_conjunction(jnp.ones((2, 3)), jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="variances must be positive"):
    ga.compose_path(z, jnp.ones((2, 3)), -jnp.ones((2, 3)))
  with pytest.raises(ValueError, match="covariance must be symmetric positive definite"):
    ga.gaussian_attention(jnp.ones((4, 2)), jnp.zeros(2), jnp.array([[1.0, 2.0], [2.0, 1.0]]))
  with pytest.raises(ValueError, match=r"covariance must have shape \(2,\)"):
    ga.gaussian_attention(jnp.ones((4, 2)), jnp.zeros(2), jnp.ones(3))
  with pytest.raises(ValueError, match="share one embedding"):
    ga.trans_e_score(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4))
  model = ga.TransGaussian(5, 2, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="anchors holds index 5 out of range; allowed: -1"):
    model.score_all(jnp.array([[5]]), jnp.array([[[0]]]))
  with pytest.raises(ValueError, match="relations holds index 2 out of range"):
    model.score_all(jnp.array([[0]]), jnp.array([[[2]]]))
  with pytest.raises(ValueError, match=r"anchors must be \(n, C\)"):
    model.score_all(jnp.array([0]), jnp.array([[[0]]]))
  _, test_q = ga.single_relation_queries(train_t, test_t)
  bad = test_q._replace(answers=test_q.answers + kb.num_entities)
  big = ga.TransE(kb.num_entities, kb.num_relations, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="queries.answers holds index"):
    ga.filtered_ranks(big, bad)
  with pytest.raises(ValueError, match="chunk_size must be a positive integer, got chunk_size=0"):
    ga.filtered_ranks(big, test_q, chunk_size=0)
  with pytest.raises(ValueError, match="test_fraction must be in"):
    ga.split_kb(kb, 1.5)
  with pytest.raises(ValueError, match="model must be 'trans_gaussian' or 'trans_e'"):
    ga.train_kb_embedding("distmult", 5, 2, [test_q])
  with pytest.raises(ValueError, match="num_players must be a positive integer, got "
                                       "num_players=0"):
    ga.synthetic_soccer_kb(num_players=0)
  with pytest.raises(ValueError, match=r"train_triples must have shape \(n, 3\)"):
    ga.single_relation_queries(np.zeros((2, 2), int), test_t)
