"""Reinforcement learning: regularized policies are reward robust (Husain, Ciosek, Tomioka
2021), implicit exploration by depth and nonlinearity (Dauparas, Tomioka, Hofmann 2018) and batch
policy gradient for neural conversation models (Kandasamy, Bachrach, Tomioka, Tarlow, Carter
2017).

The API of this family (implementation in the private modules ``_reward_robust``,
``_implicit_exploration`` and ``_batch_pg``):

* reward robustness (``_reward_robust``) -- tabular MDPs as arrays, regularized (soft) value
  iteration and policy evaluation, the occupancy-measure LP (primal and dual), the worst-case
  reward perturbation and its feasible set, gridworlds.
* implicit exploration (``_implicit_exploration``) -- DQN as one compiled training function on
  gymnax environments, vmapped over seeds; greedy and epsilon-greedy; configurable Q-networks.
* batch policy gradient (``_batch_pg``) -- off-policy batch policy gradient with importance-
  weighted lambda-returns, constant and GTD(lambda) baselines, recurrent policies over tokens.
"""

# --- _reward_robust exports ---
from tomioka_jax.rl._reward_robust import (
    GRID_ACTION_NAMES,
    GRID_ACTIONS,
    Gridworld,
    OccupancyLP,
    PolicyValues,
    RegularizedSolution,
    SoftValueIteration,
    TabularMDP,
    WorstCaseReward,
    feasible_set_violation,
    flow_residual,
    gridworld,
    occupancy_kl_conjugate,
    occupancy_kl_regularizer,
    occupancy_lp,
    occupancy_measure,
    policy_evaluation,
    policy_kl,
    policy_kl_regularizer,
    random_mdp,
    soft_value_iteration,
    solve_occupancy_regularized,
    solve_policy_regularized,
    tabular_mdp,
    worst_case_reward,
)
# --- end reward_robust ---
# --- _implicit_exploration exports ---
from tomioka_jax.rl._implicit_exploration import (
    CELL_BINS,
    DQNConfig,
    DQNHyperparams,
    OBS_BOUNDS,
    Q_ACTIVATIONS,
    ReplayBuffer,
    Transitions,
    cell_index,
    default_hyperparams,
    dqn_loss,
    env_transition,
    epsilon_greedy,
    epsilon_schedule,
    init_q_network,
    init_replay_buffer,
    learning_curve,
    make_dqn,
    mark_visited,
    q_values,
    replay_add,
    replay_sample,
    td_target,
)
# --- end implicit_exploration ---
# --- _batch_pg exports ---
from tomioka_jax.rl._batch_pg import (
    ActorCritic,
    CriticWeight,
    GTDState,
    TokenPolicy,
    batch_policy_gradient_loss,
    batch_policy_gradient_surrogate,
    constant_baseline,
    enumerate_token_sequences,
    exact_gradients,
    gtd_lambda,
    gtd_lambda_init,
    gtd_lambda_step,
    gtd_values,
    importance_weights,
    lambda_returns,
    make_actor_critic_loss,
    make_batch_pg_loss,
    make_reinforce_loss,
    sample_tokens,
    sequence_mask,
    terminal_rewards,
    token_log_probs,
)
# --- end batch_pg ---

__all__ = [
    # reward_robust
    "GRID_ACTION_NAMES",
    "GRID_ACTIONS",
    "Gridworld",
    "OccupancyLP",
    "PolicyValues",
    "RegularizedSolution",
    "SoftValueIteration",
    "TabularMDP",
    "WorstCaseReward",
    "feasible_set_violation",
    "flow_residual",
    "gridworld",
    "occupancy_kl_conjugate",
    "occupancy_kl_regularizer",
    "occupancy_lp",
    "occupancy_measure",
    "policy_evaluation",
    "policy_kl",
    "policy_kl_regularizer",
    "random_mdp",
    "soft_value_iteration",
    "solve_occupancy_regularized",
    "solve_policy_regularized",
    "tabular_mdp",
    "worst_case_reward",
    # implicit_exploration
    "CELL_BINS",
    "DQNConfig",
    "DQNHyperparams",
    "OBS_BOUNDS",
    "Q_ACTIVATIONS",
    "ReplayBuffer",
    "Transitions",
    "cell_index",
    "default_hyperparams",
    "dqn_loss",
    "env_transition",
    "epsilon_greedy",
    "epsilon_schedule",
    "init_q_network",
    "init_replay_buffer",
    "learning_curve",
    "make_dqn",
    "mark_visited",
    "q_values",
    "replay_add",
    "replay_sample",
    "td_target",
    # batch_pg
    "ActorCritic",
    "CriticWeight",
    "GTDState",
    "TokenPolicy",
    "batch_policy_gradient_loss",
    "batch_policy_gradient_surrogate",
    "constant_baseline",
    "enumerate_token_sequences",
    "exact_gradients",
    "gtd_lambda",
    "gtd_lambda_init",
    "gtd_lambda_step",
    "gtd_values",
    "importance_weights",
    "lambda_returns",
    "make_actor_critic_loss",
    "make_batch_pg_loss",
    "make_reinforce_loss",
    "sample_tokens",
    "sequence_mask",
    "terminal_rewards",
    "token_log_probs",
]
