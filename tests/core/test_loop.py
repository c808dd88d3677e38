"""Tests of ``fit``: metrics files, evaluation, and exact resumption after an interruption."""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from tomioka_jax import core
from tomioka_jax import data


def _setup(mesh=None):
  digits_train = data.load_digits("train")
  digits_test = data.load_digits("test")
  model = core.MLP(64, (32,), 10, rngs=nnx.Rngs(0))
  opt = optax.adam(3e-3)
  graphdef, state = core.create_train_state(model, opt, jax.random.key(0))
  batches = data.Batches(digits_train.as_dict(), 64, key=jax.random.key(1))
  test_batches = data.Batches(digits_test.as_dict(), 64, drop_remainder=False,
                              pad_remainder=True)
  if mesh is not None:
    state = core.replicate(state, mesh)
    get = lambda t: core.shard_batch(batches(t), mesh)
    eval_batches = lambda: (core.shard_batch(b, mesh) for b in test_batches.epoch(0))
  else:
    get, eval_batches = batches, lambda: test_batches.epoch(0)
  step = core.make_train_step(graphdef, core.cross_entropy_loss, opt, mesh=mesh)
  eval_step = core.make_eval_step(graphdef, core.classification_sums, mesh=mesh)
  return state, step, eval_step, get, eval_batches


class Interrupt(Exception):
  pass


@pytest.mark.parametrize("use_mesh", [False, True], ids=["1dev", "8dev"])
def test_resume_after_interrupt_is_bitwise_identical(tmp_path, use_mesh):
  mesh = core.data_mesh() if use_mesh else None
  state, step, eval_step, get, eval_batches = _setup(mesh)
  total = 23

  reference = core.fit(step, state, get, total, progress=False)

  def interrupted_batches(t):
    if t == 17:  # dies after step 17's checkpoint is due at 15
      raise Interrupt()
    return get(t)

  workdir = tmp_path / "run"
  with pytest.raises(Interrupt):
    core.fit(step, state, interrupted_batches, total, workdir=workdir, checkpoint_every=5,
             eval_step=eval_step, eval_batches=eval_batches, eval_every=10, progress=False)
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == list(range(1, 18))

  resumed = core.fit(step, state, get, total, workdir=workdir, checkpoint_every=5,
                     eval_step=eval_step, eval_batches=eval_batches, eval_every=10,
                     progress=False)
  assert resumed.resumed_from == 15
  assert int(resumed.state.step) == total
  for a, b in zip(jax.tree.leaves(reference.state), jax.tree.leaves(resumed.state)):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The metrics file holds every step once, and the resumed losses are the reference's.
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, total + 1))
  np.testing.assert_array_equal([r["loss"] for r in records],
                                [r["loss"] for r in reference.history])
  evals = [json.loads(l) for l in (workdir / "evals.jsonl").read_text().splitlines()]
  assert [e["step"] for e in evals] == [10, 20, 23]
  assert all(0.0 <= e["accuracy"] <= 1.0 and e["count"] == 449 for e in evals)


def test_fit_trains_digits_and_logs(tmp_path):
  state, step, eval_step, get, eval_batches = _setup()
  result = core.fit(step, state, get, 150, workdir=tmp_path, log_every=50, eval_step=eval_step,
                    eval_batches=eval_batches, progress=False)
  assert [h["step"] for h in result.history] == [50, 100, 150]
  assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
  assert result.evals[-1]["accuracy"] > 0.85
  assert (tmp_path / "metrics.jsonl").exists() and result.resumed_from is None


def test_fit_argument_errors(tmp_path):
  state, step, eval_step, get, eval_batches = _setup()
  with pytest.raises(ValueError, match="num_steps must be a positive integer, got 0"):
    core.fit(step, state, get, 0)
  with pytest.raises(ValueError, match="checkpoint_every needs a workdir"):
    core.fit(step, state, get, 5, checkpoint_every=2)
  with pytest.raises(ValueError, match="checkpoint_every must be a positive integer or None"):
    core.fit(step, state, get, 5, workdir=tmp_path, checkpoint_every=-1)
  with pytest.raises(ValueError, match="eval_step and eval_batches must be given together"):
    core.fit(step, state, get, 5, eval_step=eval_step)


def test_checkpointer_round_trip(tmp_path):
  state, step, *_ , get, _ = _setup()
  state, _ = step(state, get(0))
  with core.Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(state, force=True)
  with core.Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() == 1
    restored = ckpt.restore(state)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      a, b = jax.random.key_data(a), jax.random.key_data(b)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with core.Checkpointer(tmp_path / "empty") as ckpt, pytest.raises(FileNotFoundError):
    ckpt.restore(state)


def test_resume_is_announced_and_a_foreign_checkpoint_is_named(tmp_path, caplog):
  state, step, _, get, _ = _setup()
  core.fit(step, state, get, 4, workdir=tmp_path, checkpoint_every=2, progress=False)
  with caplog.at_level("WARNING"):
    result = core.fit(step, state, get, 6, workdir=tmp_path, checkpoint_every=2, progress=False)
  assert result.resumed_from == 4
  assert any("resuming from the checkpoint at step 4 of 6" in r.getMessage() and
             str(tmp_path) in r.getMessage() for r in caplog.records)
  # Continuing from the state the last call returned (robust.fit_pas's segments) is no resume:
  # no warning.
  caplog.clear()
  with caplog.at_level("WARNING"):
    core.fit(step, result.state, get, 8, workdir=tmp_path, checkpoint_every=2, progress=False)
  assert not [r for r in caplog.records if "resuming" in r.getMessage()]
  # The same workdir with a model of another input size: the error names the workdir and the
  # first differing array instead of orbax's raw shape error.
  model = core.MLP(65, (32,), 10, rngs=nnx.Rngs(0))
  opt = optax.adam(3e-3)
  _, other = core.create_train_state(model, opt, jax.random.key(0))
  with pytest.raises(ValueError, match=r"(?s)checkpoint at step 8 in .*checkpoints does not "
                     r"fit this train state.*saved \(64, 32\) float32, state \(65, 32\)"):
    core.fit(step, other, get, 8, workdir=tmp_path, checkpoint_every=2, progress=False)


def test_progress_bar_is_throttled_when_stderr_is_not_a_terminal(tmp_path, capsys):
  state, step, _, get, _ = _setup()
  core.fit(step, state, get, 200, progress=True)
  err = capsys.readouterr().err
  redraws = err.count("\r") + err.count("\n")
  assert "fit" in err and redraws <= 6, f"{redraws} progress redraws for 200 steps"


@pytest.mark.parametrize("kwargs, message", [
    ({"learning_rate": 0.0}, "learning_rate must be a positive number, got 0.0"),
    ({"learning_rate": -1e-3}, "learning_rate must be a positive number"),
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"num_steps": -5}, "num_steps must be a positive integer, got -5"),
])
def test_classifier_config_rejects_bad_values(kwargs, message):
  with pytest.raises(ValueError, match=message):
    core.ClassifierConfig(**kwargs)
