"""Question answering over a Gaussian knowledge-base embedding (the QA half of the paper).

Zhang, Winn, Tomioka, "Gaussian Attention Model and Its Application to Knowledge Base
Embedding and Question Answering" (2016, arXiv 1611.02266).

A natural-language question about a knowledge base is answered by turning it into a query of
the embedding (:mod:`._gaussian_attention`): a bidirectional LSTM reads the question and, for
each conjunct ``c`` and path step ``l`` of a fixed-size query, produces attention weights over
the relations; another head picks the conjunct's anchor among the question's entity mentions
(entity recognition is given). The query's Gaussian is the attention-weighted combination of
the relations' Gaussians,

.. math::  m_c = \\sum_k \\alpha_{ck} \\mu_{e_k} + \\sum_l s_{cl} \\sum_r \\beta_{clr}
   \\delta_r, \\qquad \\Sigma_c = \\sum_l s_{cl} \\sum_r \\beta_{clr} \\Sigma_r,

(:func:`compose_path`: means and covariances add along a path; ``s_{cl}`` is the probability
that step ``l`` exists, 1 for the first step), the conjuncts are multiplied
(:func:`gaussian_conjunction`, each raised to its gate ``g_c`` in ``[0, 1]``, ``g_1 = 1``), and
every entity is scored by the log of the product Gaussian at its mean. TransE answers the same
query with points instead of Gaussians (``-sum_c g_c ||m_c - mu_e||``). Training is margin
ranking with sampled negative answers, jointly with the knowledge-base embedding's own margin
ranking loss on its training facts (:func:`kb_margin_ranking_loss`), as one compiled
:func:`tomioka_jax.core.make_sampler_trainer` run.

The paper's WorldCup2014 questions are not public: :func:`kb_questions` generates templated
questions with several paraphrases per query shape over :func:`synthetic_soccer_kb`, and holds
out both facts (the knowledge-base split) and paraphrases (one template per shape).

Details of the paper that could not be verified offline: the exact heads of the encoder (here
dot-product attention over the mentions' LSTM states, and relation weights from the attended
mention's state together with the question's mean state), how the paper handles questions of
different shapes (here soft step and conjunct gates), and its training schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from tomioka_jax import core
from tomioka_jax.representation import _gaussian_attention as ga

__all__ = [
    "GaussianQA",
    "KBQuestions",
    "QUESTION_TEMPLATES",
    "QuestionSplits",
    "detokenize_question",
    "kb_questions",
    "make_qa_trainer",
    "qa_filtered_ranks",
    "qa_margin_ranking_loss",
    "qa_training_data",
    "question_query",
    "tokenize_question",
    "train_kb_qa",
]

PAD, UNK = "<pad>", "<unk>"

# Query shapes of the soccer knowledge base: (name, kind, conjuncts), a conjunct being
# (anchor placeholder, relation path); then the paraphrases, the LAST one held out by default.
QUESTION_TEMPLATES: tuple[tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...],
                                tuple[str, ...]], ...] = (
    ("country_of_player", "single", (("player", ("plays_for_country",)),),
     ("which country does {player} play for", "what is the national team of {player}",
      "{player} is from which country", "{player} plays for which country")),
    ("players_of_country", "single", (("country", ("country_has_player",)),),
     ("who plays for {country}", "which players are from {country}",
      "name a player of the {country} national team", "which players play for {country}")),
    ("club_of_player", "single", (("player", ("plays_in_club",)),),
     ("which club does {player} play for", "what is the club of {player}",
      "{player} plays for which club", "what club does {player} play for")),
    ("players_of_club", "single", (("club", ("club_has_player",)),),
     ("who plays for {club}", "which players are at {club}", "name a player of {club}",
      "which players play for {club}")),
    ("position_of_player", "single", (("player", ("plays_position",)),),
     ("what position does {player} play", "which position is {player}",
      "{player} plays in which position", "what is the position of {player}")),
    ("players_at_position", "single", (("position", ("position_has_player",)),),
     ("who plays {position}", "which players play {position}", "name a {position}",
      "which players are {position}")),
    ("country_of_club", "single", (("club", ("club_in_country",)),),
     ("which country is {club} in", "where is {club}", "{club} is in which country",
      "what country is {club} in")),
    ("clubs_of_country", "single", (("country", ("country_has_club",)),),
     ("which clubs are in {country}", "name a club in {country}",
      "what clubs does {country} have", "which clubs are from {country}")),
    ("league_of_player", "path", (("player", ("plays_in_club", "club_in_country")),),
     ("which country is the club of {player} in",
      "in which country does {player} play club football", "where is the club of {player}",
      "what country is the club of {player} in")),
    ("compatriots_of_player", "path", (("player", ("plays_for_country", "country_has_player")),),
     ("who plays for the same country as {player}",
      "which players are from the country of {player}",
      "name a player from the same country as {player}",
      "which players play for the country of {player}")),
    ("teammates_of_player", "path", (("player", ("plays_in_club", "club_has_player")),),
     ("who plays for the same club as {player}", "which players are at the club of {player}",
      "name a teammate of {player} at club level", "which players play for the club of {player}")),
    ("players_in_league", "path", (("country", ("country_has_club", "club_has_player")),),
     ("who plays for a club in {country}", "which players are at clubs in {country}",
      "name a player of a club in {country}", "which players play for clubs in {country}")),
    ("clubs_in_country_of_player", "path", (("player", ("plays_for_country",
                                                          "country_has_club")),),
     ("which clubs are in the country of {player}", "name a club in the country of {player}",
      "which clubs are from the same country as {player}",
      "what clubs does the country of {player} have")),
    ("club_and_country", "conj", (("club", ("club_has_player",)),
                                  ("country", ("country_has_player",))),
     ("which players play for {club} and are from {country}",
      "who is at {club} and plays for {country}", "name a player of {club} from {country}",
      "who plays for {club} and is from {country}")),
    ("position_and_country", "conj", (("position", ("position_has_player",)),
                                      ("country", ("country_has_player",))),
     ("who plays {position} for {country}", "which {position} plays for {country}",
      "name a {position} of {country}", "which players play {position} for {country}")),
    ("position_and_club", "conj", (("position", ("position_has_player",)),
                                   ("club", ("club_has_player",))),
     ("who plays {position} for {club}", "which {position} is at {club}",
      "name a {position} of {club}", "which players play {position} at {club}")),
)

KINDS = ("single", "path", "conj")


class KBQuestions(NamedTuple):
  """Tokenized questions with one answer per row, padded to one shape.

  Attributes:
    tokens: ``(n, T)`` int32 word indices into the vocabulary, ``0`` (``<pad>``) after the end;
      an entity mention is the token of its type (``<player>``, ``<club>``, ...).
    mentions: ``(n, M)`` int32 positions of the entity mentions in ``tokens``, ``-1`` padded.
    mention_entities: ``(n, M)`` int32 the mentioned entities (given entity recognition).
    answers: ``(n,)`` int32 the answer to rank.
    known: ``(n, K)`` int32 every answer of the question in the full knowledge base (train and
      test facts), ``-1`` padded; filtered ranking ignores them.
    anchors, relations: ``(n, C)``, ``(n, C, L)`` the question's logical form as a
      :class:`KBQueries` query (the supervision the QA model does *not* see).
    kind: ``(n,)`` int32, index into ``("single", "path", "conj")``.
    template: ``(n,)`` int32, the paraphrase (index into :attr:`QuestionSplits.templates`).
  """

  tokens: np.ndarray
  mentions: np.ndarray
  mention_entities: np.ndarray
  answers: np.ndarray
  known: np.ndarray
  anchors: np.ndarray
  relations: np.ndarray
  kind: np.ndarray
  template: np.ndarray


class QuestionSplits(NamedTuple):
  """The question sets of :func:`kb_questions` (all padded to one shape) and their vocabulary.

  Attributes:
    train: training paraphrases, answers that follow from the training facts.
    test: held-out paraphrases, answers that need a held-out fact (the main test).
    test_facts: training paraphrases, answers that need a held-out fact.
    test_paraphrases: held-out paraphrases, answers that follow from the training facts.
    vocabulary: the words of the training paraphrases, after ``<pad>`` and ``<unk>``.
    templates: every paraphrase (with ``{player}``-style placeholders).
    template_shape: index of each template's query shape in :data:`QUESTION_TEMPLATES`.
    heldout: whether each template is held out.
  """

  train: KBQuestions
  test: KBQuestions
  test_facts: KBQuestions
  test_paraphrases: KBQuestions
  vocabulary: tuple[str, ...]
  templates: tuple[str, ...]
  template_shape: tuple[int, ...]
  heldout: tuple[bool, ...]


# ---------------------------------------------------------------------------------- tokenizing


def _words(template: str) -> list[str]:
  return [w[1:-1].join("<>") if w.startswith("{") else w for w in template.lower().split()]


def tokenize_question(text: str, vocabulary: Sequence[str], length: int) -> np.ndarray:
  """Word indices of a whitespace-tokenized, lower-cased text, padded with ``0`` to ``length``.

  Words outside the vocabulary map to ``<unk>`` (index 1); placeholders ``{player}`` become
  the type tokens ``<player>``.

  Example:
    >>> vocabulary = ("<pad>", "<unk>", "<club>", "for", "who")
    >>> tokenize_question("who plays for {club}", vocabulary, 6).tolist()
    [4, 1, 3, 2, 0, 0]
  """
  if length < 1:
    raise ValueError(f"length must be a positive integer, got length={length}")
  index = {w: i for i, w in enumerate(vocabulary)}
  if index.get(PAD) != 0 or index.get(UNK) != 1:
    raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}, got "
                     f"{tuple(vocabulary[:2])}")
  words = _words(text)
  if len(words) > length:
    raise ValueError(f"the text has {len(words)} words, more than length={length}: {text!r}")
  out = np.zeros(length, np.int32)
  out[:len(words)] = [index.get(w, 1) for w in words]
  return out


def detokenize_question(tokens: ArrayLike, vocabulary: Sequence[str],
                        mention_names: Sequence[str] = ()) -> str:
  """The text of a token row, padding dropped; mentions (in order) replaced by their names.

  Example:
    >>> vocabulary = ("<pad>", "<unk>", "<club>", "for", "who")
    >>> detokenize_question([4, 1, 3, 2, 0], vocabulary, ["club_7"])
    'who <unk> for club_7'
  """
  words, names = [], list(mention_names)
  for t in np.asarray(tokens).tolist():
    if not 0 <= t < len(vocabulary):
      raise ValueError(f"tokens holds index {t} out of range; allowed: 0..{len(vocabulary) - 1}")
    if t == 0:
      continue
    w = vocabulary[t]
    if w.startswith("<") and w not in (PAD, UNK) and names:
      w = names.pop(0)
    words.append(w)
  return " ".join(words)


# ----------------------------------------------------------------------------------- questions


def kb_questions(kb: ga.KnowledgeBase, train_triples: ArrayLike, *, heldout_templates: int = 1,
                 max_keys: int | None = None, max_answers: int = 100, length: int = 12,
                 seed: int = 0) -> QuestionSplits:
  """Templated natural-language questions over :func:`synthetic_soccer_kb`, with a split.

  Every query shape of :data:`QUESTION_TEMPLATES` (8 single relations, 5 two-hop paths, 3
  conjunctions of two relations) is asked about every anchor (tuple) of the full knowledge
  base that has between 1 and ``max_answers`` answers (at most ``max_keys`` anchors per shape,
  drawn with ``seed``). The split holds out two things:

  * facts: an answer "follows from the training facts" when the training graph
    (``train_triples``, e.g. from :func:`split_kb`) reaches it by the query; the other answers
    need a held-out fact;
  * paraphrases: the last ``heldout_templates`` paraphrases of each shape never appear in
    training, and the vocabulary holds only the training paraphrases' words (an unseen word is
    ``<unk>``).

  ``train`` asks every training paraphrase of a query once per training answer;
  ``test`` asks one held-out paraphrase (drawn) per query, once per held-out answer;
  ``test_facts`` the same with one training paraphrase (drawn); ``test_paraphrases`` one
  held-out paraphrase per query, once per training answer.

  Args:
    kb: a knowledge base with the relation names of :func:`synthetic_soccer_kb`.
    train_triples: ``(n, 3)`` the training facts.
    heldout_templates: paraphrases held out per shape, in ``[1, 3]`` (4 per shape).
    max_keys: optional positive cap on the queries per shape.
    max_answers: positive; broader queries are left out.
    length: the token length ``T`` (every template fits in 9 words).
    seed: the draws' seed.

  Returns:
    :class:`QuestionSplits`, every set padded to ``M = C = L = 2`` and one ``K``.

  Example:
    >>> kb = ga.synthetic_soccer_kb(0, num_players=30)
    >>> qs = kb_questions(kb, ga.split_kb(kb, 0.2)[0])
    >>> qs.train.tokens.shape[1], qs.test.mentions.shape[1], len(qs.templates)
    (12, 2, 64)
  """
  names = dict(zip(kb.relation_names, range(kb.num_relations)))
  needed = sorted({r for _, _, conj, _ in QUESTION_TEMPLATES for _, path in conj for r in path})
  if any(r not in names for r in needed):
    raise ValueError(f"kb must have the relations of synthetic_soccer_kb {tuple(needed)}, got "
                     f"relation_names={tuple(kb.relation_names)}")
  if not 1 <= heldout_templates <= 3:
    raise ValueError(f"heldout_templates must be in [1, 3], got "
                     f"heldout_templates={heldout_templates}")
  if max_keys is not None and max_keys < 1:
    raise ValueError(f"max_keys must be None or a positive integer, got max_keys={max_keys}")
  if max_answers < 1:
    raise ValueError(f"max_answers must be a positive integer, got max_answers={max_answers}")
  train_triples = np.asarray(train_triples)
  if train_triples.ndim != 2 or train_triples.shape[1] != 3:
    raise ValueError(f"train_triples must have shape (n, 3), got {train_triples.shape}")
  rng = np.random.default_rng(seed)
  adj_all, adj_train = _adjacency(kb.triples), _adjacency(train_triples)

  templates, template_shape, heldout = [], [], []
  for s, (_, _, _, paraphrases) in enumerate(QUESTION_TEMPLATES):
    for j, t in enumerate(paraphrases):
      templates.append(t)
      template_shape.append(s)
      heldout.append(j >= len(paraphrases) - heldout_templates)
  vocabulary = (PAD, UNK) + tuple(sorted({w for t, h in zip(templates, heldout) if not h
                                          for w in _words(t)}))
  for t in templates:
    if len(_words(t)) > length:
      raise ValueError(f"length={length} is shorter than the template {t!r}")

  rows = {split: [] for split in ("train", "test", "test_facts", "test_paraphrases")}
  for s, (_, kind, conjuncts, _) in enumerate(QUESTION_TEMPLATES):
    ids = [i for i, sh in enumerate(template_shape) if sh == s]
    seen_t = [i for i in ids if not heldout[i]]
    held_t = [i for i in ids if heldout[i]]
    paths = [tuple(names[r] for r in path) for _, path in conjuncts]
    anchor_sets = [sorted({h for (h, r) in adj_all if r == p[0]}) for p in paths]
    keys = [(a,) for a in anchor_sets[0]] if len(paths) == 1 else [
        (a, b) for a in anchor_sets[0] for b in anchor_sets[1]]
    order = rng.permutation(len(keys))
    chosen = 0
    for k in order.tolist():
      if max_keys is not None and chosen == max_keys:
        break
      key = keys[k]
      full = set.intersection(*(_follow(adj_all, {a}, p) for a, p in zip(key, paths)))
      if not full or len(full) > max_answers:
        continue
      chosen += 1
      known = set.intersection(*(_follow(adj_train, {a}, p) for a, p in zip(key, paths)))
      new = full - known
      query = (key, paths, kind, full, s)
      for t in seen_t:
        rows["train"] += [(query, t, o) for o in sorted(known)]
      if new:
        t_held, t_seen = held_t[rng.integers(len(held_t))], seen_t[rng.integers(len(seen_t))]
        rows["test"] += [(query, t_held, o) for o in sorted(new)]
        rows["test_facts"] += [(query, t_seen, o) for o in sorted(new)]
      if known:
        t_held = held_t[rng.integers(len(held_t))]
        rows["test_paraphrases"] += [(query, t_held, o) for o in sorted(known)]

  width = max((len(q[3]) for split in rows.values() for q, _, _ in split), default=1)
  sets = {split: _question_arrays(r, templates, vocabulary, length, width, kb)
          for split, r in rows.items()}
  return QuestionSplits(**sets, vocabulary=vocabulary, templates=tuple(templates),
                        template_shape=tuple(template_shape), heldout=tuple(heldout))


def _adjacency(triples: ArrayLike) -> dict[tuple[int, int], set[int]]:
  adj: dict[tuple[int, int], set[int]] = {}
  for s, r, o in np.asarray(triples).tolist():
    adj.setdefault((s, r), set()).add(o)
  return adj


def _follow(adj: dict, starts: set[int], path: Sequence[int]) -> set[int]:
  current = set(starts)
  for r in path:
    current = set().union(*(adj.get((e, r), set()) for e in current)) if current else set()
  return current


def _question_arrays(rows: list, templates: list[str], vocabulary: tuple[str, ...],
                     length: int, width: int, kb: ga.KnowledgeBase) -> KBQuestions:
  n = len(rows)
  tokens = np.zeros((n, length), np.int32)
  mentions = np.full((n, 2), -1, np.int32)
  mention_entities = np.full((n, 2), -1, np.int32)
  anchors = np.full((n, 2), -1, np.int32)
  relations = np.full((n, 2, 2), -1, np.int32)
  known = np.full((n, width), -1, np.int32)
  answers = np.zeros(n, np.int32)
  kind = np.zeros(n, np.int32)
  template = np.zeros(n, np.int32)
  for i, ((key, paths, k, full, s), t, o) in enumerate(rows):
    words = _words(templates[t])
    tokens[i] = tokenize_question(templates[t], vocabulary, length)
    placeholders = [w for w in words if w.startswith("<")]
    conj_types = [c[0] for c in QUESTION_TEMPLATES[s][2]]
    for m, pos in enumerate(j for j, w in enumerate(words) if w.startswith("<")):
      mentions[i, m] = pos
      mention_entities[i, m] = key[conj_types.index(placeholders[m][1:-1])]
    for c, (a, p) in enumerate(zip(key, paths)):
      anchors[i, c] = a
      relations[i, c, :len(p)] = p
    known[i, :len(full)] = sorted(full)
    answers[i], kind[i], template[i] = o, KINDS.index(k), t
  return KBQuestions(tokens, mentions, mention_entities, answers, known, anchors, relations,
                     kind, template)


def _check_questions(q: KBQuestions, num_entities: int, vocab_size: int) -> None:
  tokens, mentions, entities, answers, known = (np.asarray(a) for a in q[:5])
  n = answers.shape[0] if answers.ndim == 1 else None
  if (n is None or tokens.ndim != 2 or tokens.shape[0] != n or mentions.ndim != 2
      or mentions.shape != entities.shape or mentions.shape[0] != n or known.ndim != 2
      or known.shape[0] != n):
    raise ValueError(f"questions must have tokens (n, T), mentions and mention_entities (n, M), "
                     f"answers (n,) and known (n, K), got shapes {tokens.shape}, "
                     f"{mentions.shape}, {entities.shape}, {answers.shape}, {known.shape}")
  _check_indices("questions.tokens", tokens, vocab_size, padded=False)
  _check_indices("questions.mentions", mentions, tokens.shape[1], padded=True)
  _check_indices("questions.mention_entities", entities, num_entities, padded=True)
  _check_indices("questions.answers", answers, num_entities, padded=False)
  _check_indices("questions.known", known, num_entities, padded=True)
  if n and np.any(mentions[:, 0] < 0):
    raise ValueError("questions must mention at least one entity in every row (mentions[:, 0] "
                     ">= 0); got a row without")


def _check_indices(name: str, value: np.ndarray, upper: int, *, padded: bool) -> None:
  if not np.issubdtype(value.dtype, np.integer):
    raise ValueError(f"{name} must hold integer indices, got dtype {value.dtype}")
  bad = (value < (-1 if padded else 0)) | (value >= upper)
  if bad.any():
    allowed = f"-1 (padding) or 0..{upper - 1}" if padded else f"0..{upper - 1}"
    raise ValueError(f"{name} holds index {int(value[bad].flat[0])} out of range; allowed: "
                     f"{allowed}")


# ------------------------------------------------------------------------------------ the model


def question_query(anchor_weights: ArrayLike, mention_means: ArrayLike,
                   relation_weights: ArrayLike, step_mask: ArrayLike, offsets: ArrayLike,
                   variances: ArrayLike | None = None) -> tuple[jax.Array, jax.Array | None]:
  """Each conjunct's Gaussian from soft anchor and relation attention (see the module equation).

  .. math::  m_c = \\sum_k \\alpha_{ck} \\mu_k + \\sum_l s_{cl} \\sum_r \\beta_{clr} \\delta_r,
     \\qquad \\Sigma_c = \\sum_l s_{cl} \\sum_r \\beta_{clr} \\Sigma_r

  The step Gaussians (attention-weighted relation offsets and covariances) are composed by
  :func:`compose_path` with ``step_mask`` as its mask (a fractional mask is the probability
  that the step exists). With one-hot weights this is the query of the chosen anchor and path.

  Args:
    anchor_weights: ``(n, C, M)`` weights over the mentions (rows sum to one).
    mention_means: ``(n, M, d)`` the mentioned entities' means.
    relation_weights: ``(n, C, L, R)`` weights over the relations.
    step_mask: ``(n, C, L)`` in ``[0, 1]``.
    offsets: ``(R, d)`` the relations' offsets ``delta_r``.
    variances: ``(R, d)`` the diagonal covariances (TransGaussian), or ``None`` (TransE: the
      translated points only).

  Returns:
    ``(means, variances)``, each ``(n, C, d)`` (variances ``None`` without ``variances``).

  Example:
    >>> m, v = question_query(jnp.ones((1, 1, 1)), jnp.zeros((1, 1, 2)),
    ...                       jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]]), jnp.ones((1, 1, 2)),
    ...                       jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.ones((2, 2)))
    >>> m.tolist(), v.tolist()
    ([[[1.0, 2.0]]], [[[2.0, 2.0]]])
  """
  anchor_weights, mention_means = jnp.asarray(anchor_weights), jnp.asarray(mention_means)
  relation_weights, offsets = jnp.asarray(relation_weights), jnp.asarray(offsets)
  if (anchor_weights.ndim != 3 or mention_means.ndim != 3 or relation_weights.ndim != 4
      or offsets.ndim != 2 or anchor_weights.shape[2] != mention_means.shape[1]
      or relation_weights.shape[3] != offsets.shape[0]
      or relation_weights.shape[:2] != anchor_weights.shape[:2]
      or mention_means.shape[2] != offsets.shape[1]):
    raise ValueError(f"expected anchor_weights (n, C, M), mention_means (n, M, d), "
                     f"relation_weights (n, C, L, R) and offsets (R, d), got "
                     f"{anchor_weights.shape}, {mention_means.shape}, {relation_weights.shape}, "
                     f"{offsets.shape}")
  anchor = jnp.einsum("ncm,nmd->ncd", anchor_weights, mention_means)
  step_offsets = jnp.einsum("nclr,rd->ncld", relation_weights, offsets)
  if variances is None:
    return ga.compose_path(anchor, step_offsets, jnp.ones_like(step_offsets), step_mask)[0], None
  step_vars = jnp.einsum("nclr,rd->ncld", relation_weights, jnp.asarray(variances))
  return ga.compose_path(anchor, step_offsets, step_vars, step_mask)


class GaussianQA(nnx.Module):
  """Question answering on a TransGaussian (or TransE) knowledge-base embedding.

  A bidirectional LSTM (:meth:`encode`) reads the word embeddings; ``h_t``
  is the concatenated state at word ``t`` and ``h`` the mean over the words. Per conjunct
  ``c`` of ``conjuncts``:

  * anchor weights ``alpha_c = softmax_k(q_c^T h_{p_k} / sqrt(D))`` over the mentions at
    positions ``p_k``, with ``q_c`` a linear function of ``h``;
  * relation weights ``beta_{cl} = softmax(W_{cl} [u_c; h])`` over the relations for each step
    ``l`` of ``path_length``, from the attended mention state ``u_c = sum_k alpha_{ck}
    h_{p_k}``; step ``l >= 2`` exists with probability ``s_{cl} = sigmoid(w_{cl}^T [u_c; h])``;
  * a gate ``g_c = sigmoid(v_c^T h)`` (``g_1 = 1``) on the conjunct.

  The query is :func:`question_query` on the knowledge-base model's parameters and entities
  are scored by ``sum_c g_c log N(mu_e; m_c, Sigma_c)`` (through
  :func:`gaussian_conjunction`) for TransGaussian or ``-sum_c g_c ||m_c - mu_e||`` for TransE.

  Args:
    kb: the knowledge-base embedding (its parameters are trained with the QA model).
    vocab_size: the vocabulary's size.
    word_dim, hidden: sizes of the word embeddings and of each LSTM direction.
    conjuncts, path_length: the query's ``C`` and ``L``.
    rngs: ``nnx.Rngs``.

  Example:
    >>> kb = ga.TransGaussian(6, 4, 3, rngs=nnx.Rngs(0))
    >>> qa = GaussianQA(kb, 10, word_dim=4, hidden=5, rngs=nnx.Rngs(1))
    >>> qa.score_all(jnp.array([[2, 3, 0]]), jnp.array([[1, -1]]), jnp.array([[4, -1]])).shape
    (1, 6)
  """

  def __init__(self, kb: ga.TransGaussian | ga.TransE, vocab_size: int, *, word_dim: int = 32,
               hidden: int = 32, conjuncts: int = 2, path_length: int = 2, rngs: nnx.Rngs):
    if not isinstance(kb, (ga.TransGaussian, ga.TransE)):
      raise ValueError(f"kb must be a TransGaussian or TransE, got {type(kb).__name__}")
    for name, v in (("vocab_size", vocab_size), ("word_dim", word_dim), ("hidden", hidden),
                    ("conjuncts", conjuncts), ("path_length", path_length)):
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {name}={v!r}")
    self.kb = kb
    self.conjuncts, self.path_length = conjuncts, path_length
    num_relations = kb.relation_offset.shape[0]
    self.embed = nnx.Embed(vocab_size, word_dim, rngs=rngs)
    self.hidden = hidden
    # Both directions' input and recurrent weights of the gates (i, f, g, o), stacked.
    self.lstm_input = nnx.Linear(word_dim, 8 * hidden, rngs=rngs)
    self.lstm_recurrent = nnx.Param(
        nnx.initializers.orthogonal()(rngs.params(), (2, hidden, 4 * hidden)))
    width = 2 * hidden
    self.anchor_head = nnx.Linear(width, conjuncts * width, rngs=rngs)
    self.relation_head = nnx.Linear(2 * width, conjuncts * path_length * (num_relations + 1),
                                    rngs=rngs)
    self.gate_head = nnx.Linear(width, conjuncts, rngs=rngs)

  def encode(self, tokens: jax.Array) -> jax.Array:
    """The bidirectional LSTM's states ``(n, T, 2 * hidden)`` (zero carry at each end).

    .. math::  (i, f, g, o) = W x_t + U h_{t-1} + b, \\quad
       c_t = \\sigma(f) c_{t-1} + \\sigma(i) \\tanh g, \\quad h_t = \\sigma(o) \\tanh c_t

    The backward direction reads each question from its last word (padding last), so its
    states do not depend on the padding. One ``lax.scan`` per direction over the words, the
    input projection outside the loop: a cell as ``nnx.OptimizedLSTMCell`` computes it,
    written out because ``nnx.RNN`` compiled several times slower inside the trainer's scan.
    """
    n, t_len = tokens.shape
    lengths = jnp.sum(tokens > 0, axis=1)
    proj = self.lstm_input(self.embed(tokens))  # (n, T, 8H)
    t = jnp.arange(t_len)[None, :]
    flip = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # an involution
    h_dim = self.hidden
    recurrent = self.lstm_recurrent[...]

    def run(x, u):
      def step(carry, xt):
        c, h = carry
        i, f, g, o = jnp.split(xt + h @ u, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h
      zero = jnp.zeros((n, h_dim), x.dtype)
      _, hs = jax.lax.scan(step, (zero, zero), jnp.swapaxes(x, 0, 1))
      return jnp.swapaxes(hs, 0, 1)

    forward = run(proj[..., :4 * h_dim], recurrent[0])
    backward_in = jnp.take_along_axis(proj[..., 4 * h_dim:], flip[..., None], axis=1)
    backward = jnp.take_along_axis(run(backward_in, recurrent[1]), flip[..., None], axis=1)
    return jnp.concatenate([forward, backward], axis=-1)

  def attention(self, tokens: jax.Array, mentions: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(anchor_weights (n, C, M), relation_weights (n, C, L, R), step_mask (n, C, L),
    gates (n, C))`` of a batch of questions."""
    n, _ = tokens.shape
    c_, l_ = self.conjuncts, self.path_length
    states = self.encode(tokens)
    valid = (tokens > 0)[..., None].astype(states.dtype)
    pooled = jnp.sum(states * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
    width = states.shape[-1]
    at = jnp.take_along_axis(states, jnp.maximum(mentions, 0)[..., None], axis=1)  # (n, M, D)
    queries = self.anchor_head(pooled).reshape(n, c_, width)
    logits = jnp.einsum("ncd,nmd->ncm", queries, at) / jnp.sqrt(width)
    logits = jnp.where((mentions >= 0)[:, None, :], logits, -1e9)
    anchor_weights = jax.nn.softmax(logits, axis=-1)
    attended = jnp.einsum("ncm,nmd->ncd", anchor_weights, at)
    features = jnp.concatenate([attended, jnp.broadcast_to(pooled[:, None], attended.shape)], -1)
    out = self.relation_head(features).reshape(n, c_, c_, l_, -1)
    out = out[:, jnp.arange(c_), jnp.arange(c_)]  # slot c's own head: (n, C, L, R + 1)
    relation_weights = jax.nn.softmax(out[..., :-1], axis=-1)
    step_mask = jax.nn.sigmoid(out[..., -1]).at[:, :, 0].set(1.0)
    gates = jax.nn.sigmoid(self.gate_head(pooled)).at[:, 0].set(1.0)
    return anchor_weights, relation_weights, step_mask, gates

  def query(self, tokens: jax.Array, mentions: jax.Array, mention_entities: jax.Array
            ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """``(means (n, C, d), variances (n, C, d) or None for TransE, gates (n, C))``."""
    anchor_w, rel_w, step_mask, gates = self.attention(tokens, mentions)
    mu = self.kb.entity_mean[...][jnp.maximum(mention_entities, 0)]
    var = (jnp.exp(self.kb.relation_log_var[...]) if isinstance(self.kb, ga.TransGaussian)
           else None)
    means, variances = question_query(anchor_w, mu, rel_w, step_mask,
                                      self.kb.relation_offset[...], var)
    return means, variances, gates

  def _score(self, tokens, mentions, mention_entities, x):
    return self.score_query(*self.query(tokens, mentions, mention_entities), x)

  def score_query(self, means: jax.Array, variances: jax.Array | None, gates: jax.Array,
                  x: jax.Array) -> jax.Array:
    """Scores ``(n, K)`` of candidate means ``x`` ``(n or 1, K, d)`` under :meth:`query`'s
    output: ``sum_c g_c log N(x; m_c, Sigma_c)`` or ``-sum_c g_c ||m_c - x||``."""
    if variances is None:
      diff = means[:, :, None, :] - x[:, None, :, :]
      dist = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(diff), axis=-1), 1e-12))
      return -jnp.sum(dist * gates[:, :, None], axis=1)
    mean, var, log_z = ga.gaussian_conjunction(means, variances, gates)
    return log_z[:, None] + core.diag_gaussian_log_prob(x, mean[:, None], jnp.log(var)[:, None])

  def score(self, tokens: jax.Array, mentions: jax.Array, mention_entities: jax.Array,
            candidates: jax.Array) -> jax.Array:
    """Scores ``(n, K)`` of candidate entities ``(n, K)``."""
    return self._score(tokens, mentions, mention_entities,
                       self.kb.entity_mean[...][candidates])

  def score_all(self, tokens: jax.Array, mentions: jax.Array, mention_entities: jax.Array
                ) -> jax.Array:
    """Scores ``(n, E)`` of every entity."""
    return self._score(tokens, mentions, mention_entities, self.kb.entity_mean[...][None])


# -------------------------------------------------------------------------------------- training


def qa_margin_ranking_loss(model: GaussianQA, batch: dict, rng: jax.Array, *,
                           num_negatives: int = 16, margin: float = 1.0,
                           kb_weight: float = 1.0) -> tuple[jax.Array, dict]:
  """Margin ranking of the questions' answers, plus the knowledge base's own ranking loss.

  .. math::  \\frac{1}{nK} \\sum_{i,k} \\big[\\gamma - \\mathrm{score}(q_i, a_i)
     + \\mathrm{score}(q_i, a'_{ik})\\big]_+ \\; + \\; \\lambda \\,
     \\mathcal{L}_{\\mathrm{KB}}

  with uniformly sampled negative answers ``a'`` and ``L_KB`` :func:`kb_margin_ranking_loss`
  on ``batch["kb"]`` (a :class:`KBQueries` batch; ``kb_weight = 0`` leaves it out).

  Returns:
    ``(loss, {"qa_loss", "kb_loss", "violations"})``.
  """
  if num_negatives < 1:
    raise ValueError(f"num_negatives must be a positive integer, got {num_negatives}")
  if margin <= 0:
    raise ValueError(f"margin must be positive, got margin={margin}")
  if kb_weight < 0:
    raise ValueError(f"kb_weight must be >= 0, got kb_weight={kb_weight}")
  q = batch["qa"]
  answers = q["answers"]
  num_entities = model.kb.entity_mean.shape[0]
  k_qa, k_kb = jax.random.split(rng)
  negatives = jax.random.randint(k_qa, (answers.shape[0], num_negatives), 0, num_entities)
  scores = model.score(q["tokens"], q["mentions"], q["mention_entities"],
                       jnp.concatenate([answers[:, None], negatives], axis=1))
  gap = margin - scores[:, :1] + scores[:, 1:]
  qa_loss = jnp.mean(jax.nn.relu(gap))
  kb_loss = jnp.zeros(())
  if kb_weight > 0 and "kb" in batch:
    kb_loss, _ = ga.kb_margin_ranking_loss(model.kb, batch["kb"], k_kb,
                                           num_negatives=num_negatives, margin=margin)
  return qa_loss + kb_weight * kb_loss, {
      "qa_loss": qa_loss, "kb_loss": kb_loss,
      "violations": jnp.mean((gap > 0).astype(gap.dtype))}


_QA_FIELDS = ("tokens", "mentions", "mention_entities", "answers")


def qa_training_data(questions: KBQuestions, kb_pools: Sequence[ga.KBQueries], *,
                     num_pools: int | None = None, shapes: ArrayLike | None = None) -> dict:
  """The device arrays :func:`make_qa_trainer`'s ``train`` samples from.

  Questions are drawn with equal probability per group of ``shapes`` (``(n,)`` labels, e.g.
  :attr:`QuestionSplits.template_shape` of each row's template; default: the rows'
  ``template``), through the cumulative distribution ``cdf``.

  ``kb_pools`` (one or more :class:`KBQueries`, e.g. ``[single]`` or ``[single, paths,
  conjunctions]``) are padded to ``C = L = 2`` and stacked into ``num_pools`` pools (cycling
  through them when there are fewer), each with its row count, so that runs with different
  pools share one shape and can be ``vmap``-ped.
  """
  if not kb_pools or any(len(p.answers) == 0 for p in kb_pools):
    raise ValueError(f"kb_pools must be a non-empty list of non-empty KBQueries, got sizes "
                     f"{[len(p.answers) for p in kb_pools]}")
  num_pools = len(kb_pools) if num_pools is None else num_pools
  if num_pools < len(kb_pools):
    raise ValueError(f"num_pools must be at least len(kb_pools)={len(kb_pools)}, got "
                     f"num_pools={num_pools}")
  if any(p.anchors.shape[1] > 2 or p.relations.shape[2] > 2 for p in kb_pools):
    raise ValueError(f"kb_pools must have at most 2 conjuncts and 2 steps, got relations shapes "
                     f"{[p.relations.shape for p in kb_pools]}")
  pools = [kb_pools[i % len(kb_pools)] for i in range(num_pools)]
  size = max(len(p.answers) for p in pools)
  anchors = np.full((num_pools, size, 2), -1, np.int32)
  relations = np.full((num_pools, size, 2, 2), -1, np.int32)
  answers = np.zeros((num_pools, size), np.int32)
  for i, p in enumerate(pools):
    n, c = p.anchors.shape
    anchors[i, :n, :c] = p.anchors
    relations[i, :n, :c, :p.relations.shape[2]] = p.relations
    answers[i, :n] = p.answers
  shape = np.asarray(questions.template) if shapes is None else np.asarray(shapes)
  _, inverse, counts = np.unique(shape, return_inverse=True, return_counts=True)
  weight = 1.0 / counts[inverse.ravel()]
  cdf = np.cumsum(weight) / weight.sum()
  return {"qa": {f: jnp.asarray(getattr(questions, f)) for f in _QA_FIELDS},
          "cdf": jnp.asarray(cdf, jnp.float32),
          "kb": {"anchors": jnp.asarray(anchors), "relations": jnp.asarray(relations),
                 "answers": jnp.asarray(answers),
                 "count": jnp.asarray([len(p.answers) for p in pools], jnp.int32)}}


def make_qa_trainer(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, *,
                    steps: int, batch_size: int, num_negatives: int = 16,
                    margin: float = 1.0, kb_weight: float = 1.0):
  """A whole QA training run as one function on :func:`tomioka_jax.core.make_sampler_trainer`.

  Each step draws ``batch_size`` training questions (with replacement, every query shape with
  the same probability: ``data["cdf"]``) and ``batch_size`` knowledge-base rows, an equal share
  from each of the ``P`` pools, from ``data`` (:func:`qa_training_data`) and takes one step of
  :func:`qa_margin_ranking_loss`. The data are an argument, not
  constants of the program, so runs with different pools share one compiled program.

  Returns:
    ``train(state, key, data) -> (state, metrics)``, jitted; ``jax.vmap`` it over runs.
  """
  for name, v in (("steps", steps), ("batch_size", batch_size)):
    if v < 1:
      raise ValueError(f"{name} must be a positive integer, got {name}={v}")
  loss_fn = functools.partial(qa_margin_ranking_loss, num_negatives=num_negatives,
                              margin=margin, kb_weight=kb_weight)

  @jax.jit
  def train(state: core.TrainState, key: jax.Array, data: dict):
    qa, kb = data["qa"], data["kb"]
    num_pools = kb["count"].shape[0]

    def sample(k):
      k_qa, k_kb = jax.random.split(k)
      u = jax.random.uniform(k_qa, (batch_size,))
      idx = jnp.minimum(jnp.searchsorted(data["cdf"], u, side="right"),
                        data["cdf"].shape[0] - 1)
      pool = jnp.arange(batch_size) % num_pools
      row = jax.random.randint(k_kb, (batch_size,), 0, kb["count"][pool])
      return {"qa": jax.tree.map(lambda x: x[idx], qa),
              "kb": {f: kb[f][pool, row] for f in ("anchors", "relations", "answers")}}

    trainer = core.make_sampler_trainer(graphdef, loss_fn, optimizer, sample=sample,
                                        steps=steps)
    return trainer(state, key)

  return train


def train_kb_qa(kb_graphdef: nnx.GraphDef, kb_params, questions: KBQuestions,
                vocab_size: int, kb_pools: Sequence[Sequence[ga.KBQueries]], *,
                seeds: Sequence[int], word_dim: int = 32, hidden: int = 32, steps: int = 1000,
                batch_size: int = 128, num_negatives: int = 16,
                margin: float = 1.0, kb_weight: float = 1.0, learning_rate: float = 0.005,
                weight_decay: float = 1e-4) -> tuple[nnx.GraphDef, core.TrainState, dict]:
  """Trains one :class:`GaussianQA` per run on top of pretrained embeddings, all runs at once.

  Run ``i`` starts from the knowledge-base parameters ``kb_params`` at index ``i`` (a leading
  run axis, e.g. ``states.params`` of :func:`train_kb_embedding`), initializes the encoder
  from ``seeds[i]`` and trains the questions jointly with the knowledge-base loss on
  ``kb_pools[i]``; the runs are ``vmap``-ped through :func:`make_qa_trainer`: one compiled
  program. AdamW on every parameter.

  Args:
    kb_graphdef: the graphdef of the knowledge-base model.
    kb_params: its ``nnx.Param`` state with a leading axis of ``len(seeds)``.
    questions: the training questions (e.g. :attr:`QuestionSplits.train`).
    vocab_size: the vocabulary's size.
    kb_pools: one non-empty list of training :class:`KBQueries` per run.
    seeds: one seed per run (encoder initialization and training key).

  Returns:
    ``(graphdef, states, metrics)`` with a leading run axis; run ``i``'s model is
    ``nnx.merge(graphdef, jax.tree.map(lambda x: x[i], states.params))``.

  Example:
    >>> kb = ga.synthetic_soccer_kb(0, num_players=20)
    >>> train_t, test_t = ga.split_kb(kb, 0.2)
    >>> single = ga.single_relation_queries(train_t, test_t)[0]
    >>> g, s, _ = ga.train_kb_embedding("trans_e", kb.num_entities, 8, [single], dim=4, steps=2,
    ...                              batch_size=8)
    >>> qs = kb_questions(kb, train_t)
    >>> _, states, m = train_kb_qa(g, s.params, qs.train, len(qs.vocabulary), [[single]],
    ...                            seeds=(0,), word_dim=4, hidden=4, steps=3, batch_size=8)
    >>> m["loss"].shape
    (1, 3)
  """
  if not seeds:
    raise ValueError("seeds must list at least one seed, got an empty sequence")
  if len(kb_pools) != len(seeds):
    raise ValueError(f"kb_pools must hold one list of pools per seed ({len(seeds)}), got "
                     f"{len(kb_pools)}")
  leading = {x.shape[0] for x in jax.tree.leaves(kb_params)}
  if leading != {len(seeds)}:
    raise ValueError(f"kb_params must have a leading axis of len(seeds)={len(seeds)}, got "
                     f"{sorted(leading)}")
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
  states, graphdef = [], None
  for i, s in enumerate(seeds):
    kb = nnx.merge(kb_graphdef, jax.tree.map(lambda x, i=i: x[i], kb_params))
    if i == 0:
      _check_questions(questions, kb.entity_mean.shape[0], vocab_size)
    net = GaussianQA(kb, vocab_size, word_dim=word_dim, hidden=hidden, rngs=nnx.Rngs(s))
    graphdef, state = core.create_train_state(net, optimizer, jax.random.key(s))
    states.append(state)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  num_pools = max(len(p) for p in kb_pools)
  datas = [qa_training_data(questions, p, num_pools=num_pools) for p in kb_pools]
  size = max(d["kb"]["answers"].shape[1] for d in datas)
  for d in datas:  # one row count across runs (padding rows are never drawn)
    pad = size - d["kb"]["answers"].shape[1]
    for f in ("anchors", "relations", "answers"):
      x = d["kb"][f]
      d["kb"][f] = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=0)
  kb_data = jax.tree.map(lambda *xs: jnp.stack(xs), *[d["kb"] for d in datas])
  train = make_qa_trainer(graphdef, optimizer, steps=steps, batch_size=batch_size,
                          num_negatives=num_negatives,
                          margin=margin, kb_weight=kb_weight)
  keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 2) for s in seeds])
  stacked, metrics = jax.vmap(train, in_axes=(0, 0, {"qa": None, "cdf": None, "kb": 0}))(
      stacked, keys, {"qa": datas[0]["qa"], "cdf": datas[0]["cdf"], "kb": kb_data})
  return graphdef, stacked, metrics


# --------------------------------------------------------------------------------------- ranking


@functools.partial(jax.jit, static_argnums=(0, 7))
def _qa_ranks(graphdef, state, tokens, mentions, entities, answers, known, chunk_size):
  n = answers.shape[0]
  pad = (-n) % chunk_size

  def padded(x):
    return jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(
        (-1, chunk_size) + x.shape[1:])

  model = nnx.merge(graphdef, state)
  # The questions' Gaussians at once; the (chunk, E, d) scoring runs in chunks.
  means, variances, gates = model.query(tokens, mentions, entities)
  x = model.kb.entity_mean[...][None]

  def chunk(args):
    m, v, g, a, k = args
    return jax.vmap(ga.filtered_rank)(model.score_query(m, v, g, x), a, k)

  ranks = jax.lax.map(chunk, tuple(None if y is None else padded(y)
                                   for y in (means, variances, gates, answers, known)))
  return ranks.reshape(-1)[:n]


def qa_filtered_ranks(model: GaussianQA, questions: KBQuestions, *, chunk_size: int = 128
                      ) -> jax.Array:
  """Filtered ranks of every question's answer against every entity, in one compiled call.

  As :func:`filtered_ranks` (the same :func:`filtered_rank`: the question's other answers in
  the full knowledge base are removed, ties count half), with the QA model's scores.

  Returns:
    ``(n,)`` float ranks; :func:`ranking_metrics` turns them into H@k and MRR.
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive integer, got chunk_size={chunk_size}")
  _check_questions(questions, model.kb.entity_mean.shape[0], model.embed.num_embeddings)
  graphdef, state = nnx.split(model)
  return _qa_ranks(graphdef, state, *(jnp.asarray(getattr(questions, f)) for f in (
      "tokens", "mentions", "mention_entities", "answers", "known")), chunk_size)
