"""Tests of the Gaussian-attention question answering: the question generator against slow
joins over the triples, the composed query against hand-computed Gaussians, and training."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tomioka_jax.representation import _gaussian_attention as ga
from tomioka_jax.representation import _kb_qa as qa


@pytest.fixture(scope="module")
def small():
  kb = ga.synthetic_soccer_kb(0, num_players=30, num_countries=3, clubs_per_country=2)
  train_t, test_t = ga.split_kb(kb, 0.2, seed=0)
  return kb, train_t, test_t, qa.kb_questions(kb, train_t, seed=1)


def _slow_answers(triples, anchor, path):
  """Entities reached from ``anchor`` along ``path``: a join over the triple list."""
  current = {anchor}
  for r in path:
    current = {o for s, rr, o in triples if rr == r and s in current}
  return current


def _type(name):
  return "<" + name.split("_")[0] + ">"


# ----------------------------------------------------------------------------------- questions


def test_answers_are_kb_joins_and_the_split_holds_out_facts_and_paraphrases(small):
  kb, train_t, _, qs = small
  full = [tuple(t) for t in kb.triples.tolist()]
  train = [tuple(t) for t in train_t.tolist()]
  cache = {}

  def answers(triples, key, row):
    k = (id(triples), key)
    if k not in cache:
      sets = [_slow_answers(triples, int(a), [int(r) for r in rel if r >= 0])
              for a, rel in zip(row.anchors, row.relations) if a >= 0]
      cache[k] = set.intersection(*sets)
    return cache[k]

  heldout = np.asarray(qs.heldout)
  for split in ("train", "test", "test_facts", "test_paraphrases"):
    q = getattr(qs, split)
    assert len(q.answers) > 0
    for i in range(len(q.answers)):
      row = qa.KBQuestions(*(x[i] for x in q))
      key = (row.anchors.tobytes(), row.relations.tobytes())
      all_answers = answers(full, key, row)
      train_answers = answers(train, key, row)
      assert set(row.known[row.known >= 0].tolist()) == all_answers
      if split in ("train", "test_paraphrases"):
        assert int(row.answers) in train_answers
      else:
        assert int(row.answers) in all_answers - train_answers
      assert bool(heldout[row.template]) == (split in ("test", "test_paraphrases"))
      # The mentions are the anchors, each at a token of its entity's type.
      ents = row.mention_entities[row.mention_entities >= 0]
      assert sorted(ents.tolist()) == sorted(row.anchors[row.anchors >= 0].tolist())
      for pos, e in zip(row.mentions[row.mentions >= 0], ents):
        assert qs.vocabulary[row.tokens[pos]] == _type(kb.entity_names[e])
      # The logical form is the template's query shape.
      shape = qa.QUESTION_TEMPLATES[qs.template_shape[row.template]]
      assert qa.KINDS[row.kind] == shape[1]
      names = [[kb.relation_names[r] for r in rel if r >= 0]
               for a, rel in zip(row.anchors, row.relations) if a >= 0]
      assert names == [list(p) for _, p in shape[2]]
  # Every shape has questions, and the kinds' counts add up.
  assert set(qs.train.kind.tolist()) == {0, 1, 2}
  assert len(set(qs.template_shape[t] for t in qs.train.template)) == len(qa.QUESTION_TEMPLATES)


def test_tokenization_round_trips_and_unseen_words_are_unk(small):
  kb, _, _, qs = small
  for split in ("train", "test"):
    q = getattr(qs, split)
    for i in range(0, len(q.answers), max(len(q.answers) // 40, 1)):
      template = qs.templates[q.template[i]]
      names = [kb.entity_names[e] for e in q.mention_entities[i] if e >= 0]
      text = qa.detokenize_question(q.tokens[i], qs.vocabulary, names)
      expected, it = [], iter(names)
      for w in template.split():
        expected.append(next(it) if w.startswith("{") else
                        w if w in qs.vocabulary else "<unk>")
      assert text == " ".join(expected)
      if split == "train":
        assert "<unk>" not in text  # the vocabulary is the training paraphrases' words
  # The held-out paraphrases' new words are unknown to the encoder.
  held_words = {w for t, h in zip(qs.templates, qs.heldout) if h for w in t.split()}
  assert any(w not in qs.vocabulary for w in held_words)
  assert all(not w.startswith("{") for w in qs.vocabulary)
  # Fixed shapes across the splits (one compiled evaluation).
  shapes = {tuple(getattr(qs, s).tokens.shape[1:]) + getattr(qs, s).known.shape[1:]
            + getattr(qs, s).relations.shape[1:] for s in qa.QuestionSplits._fields[:4]}
  assert len(shapes) == 1 and shapes.pop()[2:] == (2, 2)


def test_bad_input_raises(small):
  kb, train_t, _, qs = small
  other = kb._replace(relation_names=tuple(f"r{i}" for i in range(8)))
  with pytest.raises(ValueError, match="kb must have the relations of synthetic_soccer_kb"):
    qa.kb_questions(other, train_t)
  with pytest.raises(ValueError, match="heldout_templates must be in"):
    qa.kb_questions(kb, train_t, heldout_templates=0)
  with pytest.raises(ValueError, match="max_keys must be None or a positive integer"):
    qa.kb_questions(kb, train_t, max_keys=0)
  with pytest.raises(ValueError, match=r"train_triples must have shape \(n, 3\)"):
    qa.kb_questions(kb, train_t[:, :2])
  with pytest.raises(ValueError, match="length=4 is shorter than the template"):
    qa.kb_questions(kb, train_t, length=4)
  with pytest.raises(ValueError, match="more than length=2"):
    qa.tokenize_question("who plays for {club}", qs.vocabulary, 2)
  with pytest.raises(ValueError, match="vocabulary must start with"):
    qa.tokenize_question("who", ("who", "<pad>"), 3)
  with pytest.raises(ValueError, match="tokens holds index 99 out of range"):
    qa.detokenize_question([99], qs.vocabulary)
  with pytest.raises(ValueError, match="kb must be a TransGaussian or TransE"):
    qa.GaussianQA(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), 5, rngs=nnx.Rngs(0))
  tg = ga.TransGaussian(kb.num_entities, kb.num_relations, 4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="hidden must be a positive integer"):
    qa.GaussianQA(tg, 5, hidden=0, rngs=nnx.Rngs(0))
  model = qa.GaussianQA(tg, len(qs.vocabulary), word_dim=4, hidden=4, rngs=nnx.Rngs(0))
  bad = qs.test._replace(answers=np.full_like(qs.test.answers, kb.num_entities))
  with pytest.raises(ValueError, match="questions.answers holds index"):
    qa.qa_filtered_ranks(model, bad)
  no_mention = qs.test._replace(mentions=np.full_like(qs.test.mentions, -1),
                                mention_entities=np.full_like(qs.test.mentions, -1))
  with pytest.raises(ValueError, match="at least one entity in every row"):
    qa.qa_filtered_ranks(model, no_mention)
  with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
    qa.qa_filtered_ranks(model, qs.test, chunk_size=0)
  with pytest.raises(ValueError, match="kb_pools must be a non-empty list"):
    qa.qa_training_data(qs.train, [])
  with pytest.raises(ValueError, match="num_negatives must be a positive integer"):
    qa.qa_margin_ranking_loss(model, {}, jax.random.key(0), num_negatives=0)
  with pytest.raises(ValueError, match="kb_weight must be >= 0"):
    qa.qa_margin_ranking_loss(model, {}, jax.random.key(0), kb_weight=-1.0)
  graphdef, state = nnx.split(tg)
  params = jax.tree.map(lambda x: x[None], state)
  with pytest.raises(ValueError, match="kb_pools must hold one list of pools per seed"):
    qa.train_kb_qa(graphdef, params, qs.train, len(qs.vocabulary), [], seeds=(0,))
  with pytest.raises(ValueError, match="kb_params must have a leading axis of len"):
    qa.train_kb_qa(graphdef, params, qs.train, len(qs.vocabulary), [[], []], seeds=(0, 1))
  with pytest.raises(ValueError, match="expected anchor_weights"):
    qa.question_query(jnp.ones((1, 2, 1)), jnp.ones((1, 1, 3)), jnp.ones((1, 2, 2, 4)),
                      jnp.ones((1, 2, 2)), jnp.ones((5, 3)))


# -------------------------------------------------------------------------------- the equations


def test_one_hot_attention_gives_the_chosen_paths_gaussian():
  rng = np.random.default_rng(0)
  d, r_num = 3, 5
  mu = rng.normal(size=(2, d))  # two mentions
  delta = rng.normal(size=(r_num, d))
  var = rng.uniform(0.2, 2.0, size=(r_num, d))
  # Conjunct 0: mention 1, path r3 -> r1; conjunct 1: mention 0, r4 only (step 2 masked).
  anchor_w = np.zeros((1, 2, 2))
  anchor_w[0, 0, 1] = anchor_w[0, 1, 0] = 1.0
  rel_w = np.zeros((1, 2, 2, r_num))
  rel_w[0, 0, 0, 3] = rel_w[0, 0, 1, 1] = rel_w[0, 1, 0, 4] = rel_w[0, 1, 1, 2] = 1.0
  step = np.array([[[1.0, 1.0], [1.0, 0.0]]])
  means, variances = qa.question_query(anchor_w, mu[None], rel_w, step, delta, var)
  np.testing.assert_allclose(means[0, 0], mu[1] + delta[3] + delta[1], rtol=1e-6)
  np.testing.assert_allclose(variances[0, 0], var[3] + var[1], rtol=1e-6)
  np.testing.assert_allclose(means[0, 1], mu[0] + delta[4], rtol=1e-6)
  np.testing.assert_allclose(variances[0, 1], var[4], rtol=1e-6)
  # The same as TransGaussian's own query of that logical form (a product of two Gaussians).
  kb = ga.TransGaussian(2, r_num, d, rngs=nnx.Rngs(0))
  kb.entity_mean[...] = jnp.asarray(mu, jnp.float32)
  kb.relation_offset[...] = jnp.asarray(delta, jnp.float32)
  kb.relation_log_var[...] = jnp.asarray(np.log(var), jnp.float32)
  model = qa.GaussianQA(kb, 4, word_dim=2, hidden=2, rngs=nnx.Rngs(0))
  x = jnp.asarray(rng.normal(size=(1, 6, d)), jnp.float32)
  ours = model.score_query(means, variances, jnp.ones((1, 2)), x)
  m_kb, v_kb, z_kb = kb.query(jnp.array([[1, 0]]), jnp.array([[[3, 1], [4, -1]]]))
  m_qa, v_qa, z_qa = ga.gaussian_conjunction(means, variances)
  np.testing.assert_allclose(m_qa, m_kb, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v_qa, v_kb, rtol=1e-5)
  np.testing.assert_allclose(z_qa, z_kb, rtol=1e-5)
  direct = sum(-0.5 * np.sum(np.log(2 * math.pi * v) + (np.asarray(x[0]) - m) ** 2 / v, axis=1)
               for m, v in ((mu[1] + delta[3] + delta[1], var[3] + var[1]),
                            (mu[0] + delta[4], var[4])))
  np.testing.assert_allclose(ours[0], direct, rtol=1e-4)
  # Fractional weights: linear in the weights (the mixture of offsets and covariances).
  rel_mix = 0.25 * rel_w + 0.75 * np.roll(rel_w, 1, axis=-1)
  m_mix, v_mix = qa.question_query(anchor_w, mu[None], rel_mix, step, delta, var)
  m_a, v_a = qa.question_query(anchor_w, mu[None], np.roll(rel_w, 1, axis=-1), step, delta, var)
  np.testing.assert_allclose(m_mix, 0.25 * means + 0.75 * m_a, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v_mix, 0.25 * variances + 0.75 * v_a, rtol=1e-5)


def test_gated_scores_are_the_weighted_sums_of_log_densities_and_distances():
  rng = np.random.default_rng(1)
  means = rng.normal(size=(2, 2, 3))
  variances = rng.uniform(0.3, 2.0, size=(2, 2, 3))
  gates = np.array([[1.0, 0.3], [1.0, 0.0]])
  x = rng.normal(size=(1, 5, 3))
  tg = qa.GaussianQA(ga.TransGaussian(3, 2, 3, rngs=nnx.Rngs(0)), 4, word_dim=2, hidden=2,
                     rngs=nnx.Rngs(0))
  te = qa.GaussianQA(ga.TransE(3, 2, 3, rngs=nnx.Rngs(0)), 4, word_dim=2, hidden=2,
                     rngs=nnx.Rngs(0))
  log_n = -0.5 * np.sum(np.log(2 * math.pi * variances[:, :, None])
                        + (x[:, None] - means[:, :, None]) ** 2 / variances[:, :, None], -1)
  np.testing.assert_allclose(tg.score_query(means, variances, gates, x),
                             np.sum(gates[:, :, None] * log_n, 1), rtol=1e-4)
  dist = np.linalg.norm(x[:, None] - means[:, :, None], axis=-1)
  np.testing.assert_allclose(te.score_query(means, None, gates, x),
                             -np.sum(gates[:, :, None] * dist, 1), rtol=1e-5)


def test_encoder_backward_direction_ignores_padding_and_is_a_reversed_lstm():
  model = qa.GaussianQA(ga.TransE(3, 2, 3, rngs=nnx.Rngs(0)), 6, word_dim=3, hidden=4,
                        rngs=nnx.Rngs(0))
  tokens = jnp.array([[2, 3, 4, 0, 0], [2, 3, 4, 5, 5]])
  h = np.asarray(model.encode(tokens))
  short = np.asarray(model.encode(tokens[:1, :3]))
  np.testing.assert_allclose(h[0, :3], short[0], rtol=1e-5, atol=1e-6)
  # Slow reference of the forward direction: the LSTM equations step by step.
  w = np.asarray(model.lstm_input.kernel[...])
  b = np.asarray(model.lstm_input.bias[...])
  u = np.asarray(model.lstm_recurrent[...])
  emb = np.asarray(model.embed.embedding[...])
  sig = lambda z: 1 / (1 + np.exp(-z))
  c = hh = np.zeros(4)
  for t, tok in enumerate([2, 3, 4]):
    i, f, g, o = np.split(emb[tok] @ w[:, :16] + b[:16] + hh @ u[0], 4)
    c = sig(f) * c + sig(i) * np.tanh(g)
    hh = sig(o) * np.tanh(c)
    np.testing.assert_allclose(h[0, t, :4], hh, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------ training


def test_gradients_are_finite_and_reach_every_part(small):
  kb, _, _, qs = small
  for cls in (ga.TransGaussian, ga.TransE):
    model = qa.GaussianQA(cls(kb.num_entities, kb.num_relations, 4, rngs=nnx.Rngs(0)),
                          len(qs.vocabulary), word_dim=4, hidden=4, rngs=nnx.Rngs(1))
    rows = np.concatenate([np.flatnonzero(qs.train.kind == k)[:6] for k in range(3)])
    batch = {"qa": {f: jnp.asarray(getattr(qs.train, f)[rows]) for f in qa._QA_FIELDS},
             "kb": {"anchors": jnp.asarray(qs.train.anchors[rows]),
                    "relations": jnp.asarray(qs.train.relations[rows]),
                    "answers": jnp.asarray(qs.train.answers[rows])}}
    graphdef, params = nnx.split(model)
    grads = jax.jit(jax.grad(lambda p: qa.qa_margin_ranking_loss(
        nnx.merge(graphdef, p), batch, jax.random.key(0))[0]))(params)
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    for part in (grads["lstm_recurrent"], grads["anchor_head"], grads["relation_head"],
                 grads["kb"]["relation_offset"], grads["kb"]["entity_mean"]):
      assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(part)) > 0


def test_training_improves_the_mrr_of_held_out_paraphrases(small):
  kb, train_t, test_t, qs = small
  single = ga.single_relation_queries(train_t, test_t)[0]
  g, states, _ = ga.train_kb_embedding("trans_gaussian", kb.num_entities, kb.num_relations,
                                       [single], dim=8, steps=200, batch_size=32, seeds=(0,))
  qg, qstates, metrics = qa.train_kb_qa(g, states.params, qs.train, len(qs.vocabulary),
                                        [[single]], seeds=(0,), word_dim=16, hidden=16,
                                        steps=300, batch_size=32, learning_rate=0.01)
  assert metrics["loss"].shape == (1, 300)
  trained = nnx.merge(qg, jax.tree.map(lambda x: x[0], qstates.params))
  untrained = qa.GaussianQA(nnx.merge(g, jax.tree.map(lambda x: x[0], states.params)),
                            len(qs.vocabulary), word_dim=16, hidden=16, rngs=nnx.Rngs(0))
  q = qs.test_paraphrases
  after = ga.ranking_metrics(qa.qa_filtered_ranks(trained, q))["mrr"]
  before = ga.ranking_metrics(qa.qa_filtered_ranks(untrained, q))["mrr"]
  assert after > before + 0.2, (before, after)
  # The filtered ranks are those of the scores, recomputed slowly.
  scores = np.asarray(trained.score_all(*(jnp.asarray(x[:20]) for x in q[:3])))
  ranks = np.asarray(qa.qa_filtered_ranks(trained, q))[:20]
  for i in range(20):
    keep = np.ones(kb.num_entities, bool)
    keep[q.known[i][q.known[i] >= 0]] = False
    s_t = scores[i, q.answers[i]]
    expected = 1 + np.sum(scores[i, keep] > s_t) + 0.5 * np.sum(scores[i, keep] == s_t)
    assert ranks[i] == pytest.approx(expected)
