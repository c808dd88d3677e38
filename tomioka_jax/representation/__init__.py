"""Representation learning: information-theoretic distribution shift (Federici, Tomioka, Forré
2021), multiple similarity measures from triplet comparisons (Zhang, Maji, Tomioka 2015) and the
Gaussian attention model for knowledge bases (Zhang, Winn, Tomioka 2016).

The API of this family (implementation in the private modules ``_dist_shift``,
``_dist_shift_neural``, ``_triplets``, ``_gaussian_attention`` and ``_kb_qa``):

* distribution shift (``_dist_shift``) -- exact information quantities of discrete joints, the
  CMNIST-family data-generating processes, exact criterion optimization over a finite code space,
  and the penalties of the neural objectives (IRMv1, VREx, the DANN/CDANN discriminator loss).
* neural distribution shift (``_dist_shift_neural``) -- the CMNIST-family processes on real
  images (coloured 8x8 digits, coloured Fashion-MNIST), ERM/VIB/DANN/CDANN/IRM/VREx objectives
  with the reference's beta schedule, and their training vmapped over seeds.
* triplets (``_triplets``) -- a shared embedding with view-specific PSD metrics learned from
  triplet comparisons, independent and pooled baselines, STE and t-STE, a multi-view generator.
* Gaussian attention (``_gaussian_attention``) -- TransGaussian and TransE scores, path and
  conjunctive queries, margin-ranking training, filtered ranking, a synthetic compositional
  knowledge base and WordNet.
* knowledge-base QA (``_kb_qa``) -- templated questions over the knowledge base with held-out
  facts and paraphrases, and the QA model: an LSTM's attention over relations and mentioned
  entities composes a Gaussian query (paths add, conjunctions multiply), ranked over all
  entities.
* :mod:`tomioka_jax.representation.tib` -- the time-lagged information bottleneck (Federici,
  Forré, Tomioka, Veeling 2023), a public sub-namespace: the 2-D Prinz process, InfoNCE and
  SMILE estimators, TICA/VAMPNet baselines, T-InfoMax and T-IB with latent simulation.
"""

from tomioka_jax.representation import tib

from tomioka_jax.representation._dist_shift import CMNIST_AXES
from tomioka_jax.representation._dist_shift import CMNIST_VARIANTS
from tomioka_jax.representation._dist_shift import CRITERIA
from tomioka_jax.representation._dist_shift import DiscreteEncoderFit
from tomioka_jax.representation._dist_shift import ENCODED_AXES
from tomioka_jax.representation._dist_shift import adversarial_cross_entropy
from tomioka_jax.representation._dist_shift import cmnist_distribution
from tomioka_jax.representation._dist_shift import conditional
from tomioka_jax.representation._dist_shift import criterion_loss
from tomioka_jax.representation._dist_shift import criterion_regularizer
from tomioka_jax.representation._dist_shift import cross_entropy
from tomioka_jax.representation._dist_shift import encoded_joint
from tomioka_jax.representation._dist_shift import entropy
from tomioka_jax.representation._dist_shift import environment_risks
from tomioka_jax.representation._dist_shift import feature_cross_entropies
from tomioka_jax.representation._dist_shift import fit_discrete_encoder
from tomioka_jax.representation._dist_shift import irm_penalty
from tomioka_jax.representation._dist_shift import marginal
from tomioka_jax.representation._dist_shift import mutual_information
from tomioka_jax.representation._dist_shift import predictor_cross_entropy
from tomioka_jax.representation._dist_shift import split_environments
from tomioka_jax.representation._dist_shift import vrex_penalty
from tomioka_jax.representation._dist_shift_neural import ADVERSARIAL_OBJECTIVES
from tomioka_jax.representation._dist_shift_neural import DIST_SHIFT_OBJECTIVES
from tomioka_jax.representation._dist_shift_neural import IMAGE_SOURCES
from tomioka_jax.representation._dist_shift_neural import ColoredDigits
from tomioka_jax.representation._dist_shift_neural import ColoredDigitsSplit
from tomioka_jax.representation._dist_shift_neural import DistShiftFit
from tomioka_jax.representation._dist_shift_neural import DistShiftModel
from tomioka_jax.representation._dist_shift_neural import beta_schedule
from tomioka_jax.representation._dist_shift_neural import colored_digits
from tomioka_jax.representation._dist_shift_neural import default_beta_increment
from tomioka_jax.representation._dist_shift_neural import dist_shift_cross_entropies
from tomioka_jax.representation._dist_shift_neural import gradient_reversal
from tomioka_jax.representation._dist_shift_neural import make_dist_shift_loss
from tomioka_jax.representation._dist_shift_neural import train_dist_shift
from tomioka_jax.representation._gaussian_attention import KBQueries
from tomioka_jax.representation._gaussian_attention import KnowledgeBase
from tomioka_jax.representation._gaussian_attention import TransE
from tomioka_jax.representation._gaussian_attention import TransGaussian
from tomioka_jax.representation._gaussian_attention import compose_path
from tomioka_jax.representation._gaussian_attention import conjunction_log_score
from tomioka_jax.representation._gaussian_attention import conjunctive_queries
from tomioka_jax.representation._gaussian_attention import filtered_rank
from tomioka_jax.representation._gaussian_attention import filtered_ranks
from tomioka_jax.representation._gaussian_attention import gaussian_attention
from tomioka_jax.representation._gaussian_attention import gaussian_conjunction
from tomioka_jax.representation._gaussian_attention import kb_margin_ranking_loss
from tomioka_jax.representation._gaussian_attention import load_wordnet_kb
from tomioka_jax.representation._gaussian_attention import make_kb_trainer
from tomioka_jax.representation._gaussian_attention import path_queries
from tomioka_jax.representation._gaussian_attention import ranking_metrics
from tomioka_jax.representation._gaussian_attention import single_relation_queries
from tomioka_jax.representation._gaussian_attention import split_kb
from tomioka_jax.representation._gaussian_attention import synthetic_soccer_kb
from tomioka_jax.representation._gaussian_attention import train_kb_embedding
from tomioka_jax.representation._gaussian_attention import trans_e_score
from tomioka_jax.representation._gaussian_attention import trans_gaussian_score
from tomioka_jax.representation._kb_qa import GaussianQA
from tomioka_jax.representation._kb_qa import KBQuestions
from tomioka_jax.representation._kb_qa import QUESTION_TEMPLATES
from tomioka_jax.representation._kb_qa import QuestionSplits
from tomioka_jax.representation._kb_qa import detokenize_question
from tomioka_jax.representation._kb_qa import kb_questions
from tomioka_jax.representation._kb_qa import make_qa_trainer
from tomioka_jax.representation._kb_qa import qa_filtered_ranks
from tomioka_jax.representation._kb_qa import qa_margin_ranking_loss
from tomioka_jax.representation._kb_qa import qa_training_data
from tomioka_jax.representation._kb_qa import question_query
from tomioka_jax.representation._kb_qa import tokenize_question
from tomioka_jax.representation._kb_qa import train_kb_qa
from tomioka_jax.representation._triplets import MultiviewTriplets
from tomioka_jax.representation._triplets import TRIPLET_LOSSES
from tomioka_jax.representation._triplets import TRIPLET_METRICS
from tomioka_jax.representation._triplets import TRIPLET_MODELS
from tomioka_jax.representation._triplets import TripletFit
from tomioka_jax.representation._triplets import TripletParams
from tomioka_jax.representation._triplets import check_triplets
from tomioka_jax.representation._triplets import fit_triplets
from tomioka_jax.representation._triplets import init_triplet_params
from tomioka_jax.representation._triplets import make_multiview_triplets
from tomioka_jax.representation._triplets import shared_coordinate_views
from tomioka_jax.representation._triplets import ste_probability
from tomioka_jax.representation._triplets import triplet_distances
from tomioka_jax.representation._triplets import triplet_error
from tomioka_jax.representation._triplets import triplet_loss
from tomioka_jax.representation._triplets import triplet_margins
from tomioka_jax.representation._triplets import triplet_objective
from tomioka_jax.representation._triplets import tste_probability
from tomioka_jax.representation._triplets import view_embeddings
from tomioka_jax.representation._triplets import view_metrics

__all__ = [
    "tib",
    "CMNIST_AXES",
    "CMNIST_VARIANTS",
    "CRITERIA",
    "ENCODED_AXES",
    "DiscreteEncoderFit",
    "adversarial_cross_entropy",
    "cmnist_distribution",
    "conditional",
    "criterion_loss",
    "criterion_regularizer",
    "cross_entropy",
    "encoded_joint",
    "entropy",
    "environment_risks",
    "feature_cross_entropies",
    "fit_discrete_encoder",
    "irm_penalty",
    "marginal",
    "mutual_information",
    "predictor_cross_entropy",
    "split_environments",
    "vrex_penalty",
    "ADVERSARIAL_OBJECTIVES",
    "DIST_SHIFT_OBJECTIVES",
    "IMAGE_SOURCES",
    "ColoredDigits",
    "ColoredDigitsSplit",
    "DistShiftFit",
    "DistShiftModel",
    "beta_schedule",
    "colored_digits",
    "default_beta_increment",
    "dist_shift_cross_entropies",
    "gradient_reversal",
    "make_dist_shift_loss",
    "train_dist_shift",
    "KnowledgeBase",
    "KBQueries",
    "TransE",
    "TransGaussian",
    "compose_path",
    "conjunction_log_score",
    "conjunctive_queries",
    "filtered_rank",
    "filtered_ranks",
    "gaussian_attention",
    "gaussian_conjunction",
    "kb_margin_ranking_loss",
    "load_wordnet_kb",
    "make_kb_trainer",
    "path_queries",
    "ranking_metrics",
    "single_relation_queries",
    "split_kb",
    "synthetic_soccer_kb",
    "train_kb_embedding",
    "trans_e_score",
    "trans_gaussian_score",
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
    "TRIPLET_MODELS",
    "TRIPLET_LOSSES",
    "TRIPLET_METRICS",
    "check_triplets",
    "view_metrics",
    "view_embeddings",
    "triplet_distances",
    "triplet_margins",
    "ste_probability",
    "tste_probability",
    "triplet_loss",
    "triplet_error",
    "TripletParams",
    "init_triplet_params",
    "triplet_objective",
    "TripletFit",
    "fit_triplets",
    "shared_coordinate_views",
    "MultiviewTriplets",
    "make_multiview_triplets",
]
