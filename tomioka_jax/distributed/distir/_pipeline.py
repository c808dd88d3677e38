"""Pipeline-parallel microbatch schedules: GPipe (FIFO) and 1F1B (PipeDream-Flush).

A pipeline of ``p`` stages runs ``m`` microbatches; each stage runs, per microbatch, a
forward task ``F_k`` and a backward task ``B_k``. ``F_k`` on stage ``s`` needs ``F_k`` of
stage ``s - 1``; ``B_k`` on stage ``s`` needs ``B_k`` of stage ``s + 1`` (the last stage's
``B_k`` needs its own ``F_k``). A schedule is each stage's order of its ``2m`` tasks:

* **GPipe** (FIFO, Huang et al. 2019; the reference's ``fifo_scheduler``): every forward,
  then every backward, both in microbatch order. A stage holds the activations of all
  ``m`` microbatches at once.
* **1F1B** (PipeDream-Flush, Narayanan et al. 2021; the reference's
  ``pipedream_scheduler``): stage ``s`` runs ``w_s = min(p - 1 - s, m)`` warm-up
  forwards, then alternates one forward and one backward, then drains the last ``w_s``
  backwards. At most ``w_s + 1 <= p - s`` microbatches are in flight on stage ``s``.

Both schedules have the same bubble (``p - 1`` task slots per direction); 1F1B bounds the
activation memory by the pipeline depth instead of the number of microbatches.
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEDULES = ("gpipe", "1f1b")

Task = tuple[str, int]  # ("F" | "B", microbatch)


def check_schedule(schedule: str) -> str:
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
  return schedule


def pipeline_schedule(num_stages: int, num_microbatches: int,
                      schedule: str = "gpipe") -> list[list[Task]]:
  """Each stage's order of forward and backward tasks.

  Args:
    num_stages: ``p >= 1``.
    num_microbatches: ``m >= 1``.
    schedule: ``"gpipe"`` (FIFO) or ``"1f1b"``.

  Returns:
    ``orders[s]``: the ``2m`` tasks ``("F", k)`` / ``("B", k)`` of stage ``s`` in the order
    the stage runs them.

  Example:
    >>> pipeline_schedule(2, 2, "1f1b")
    [[('F', 0), ('F', 1), ('B', 0), ('B', 1)], [('F', 0), ('B', 0), ('F', 1), ('B', 1)]]
  """
  for name, value in (("num_stages", num_stages), ("num_microbatches", num_microbatches)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"pipeline_schedule: {name} must be an integer >= 1, got {value!r}")
  check_schedule(schedule)
  p, m = num_stages, num_microbatches
  orders = []
  for s in range(p):
    if schedule == "gpipe":
      order = [("F", k) for k in range(m)] + [("B", k) for k in range(m)]
    else:
      warmup = min(p - 1 - s, m)
      order = [("F", k) for k in range(warmup)]
      for i in range(m - warmup):
        order += [("F", warmup + i), ("B", i)]
      order += [("B", k) for k in range(m - warmup, m)]
    orders.append(order)
  return orders


def interleave_stages(orders: Sequence[Sequence[Task]], *, forward_time: float = 1.0,
                      backward_time: float = 2.0) -> list[tuple[int, Task]]:
  """One global order of every ``(stage, task)``: the order of the tasks' start times when
  each stage runs its tasks in its order, each as soon as its dependency is done, with a
  forward task taking ``forward_time`` and a backward ``backward_time``.

  The order respects each stage's order and the dependencies between stages (a topological
  order of the pipeline's task graph), and it is a plausible *time* order: a message is
  written into the global program near the time it is sent, which a simulator whose
  ``send`` is a rendezvous needs (a receive placed long before its data exists would stall
  the receiver).

  Raises:
    ValueError: the per-stage orders deadlock (a task waits on one that waits on it).
  """
  if not (forward_time > 0 and backward_time > 0):
    raise ValueError(f"interleave_stages: task times must be > 0, got {forward_time!r}, "
                     f"{backward_time!r}")
  p = len(orders)
  finish: dict[tuple[int, Task], float] = {}
  pointers = [0] * p
  free = [0.0] * p
  total = sum(len(o) for o in orders)
  started: list[tuple[float, int, Task]] = []

  def dependency(s: int, task: Task) -> tuple[int, Task] | None:
    kind, k = task
    if kind == "F":
      return None if s == 0 else (s - 1, ("F", k))
    return (s, ("F", k)) if s == p - 1 else (s + 1, ("B", k))

  while len(started) < total:
    progressed = False
    for s in range(p):
      while pointers[s] < len(orders[s]):
        task = orders[s][pointers[s]]
        dep = dependency(s, task)
        if dep is not None and dep not in finish:
          break
        begin = max(free[s], finish[dep] if dep is not None else 0.0)
        free[s] = begin + (forward_time if task[0] == "F" else backward_time)
        finish[s, task] = free[s]
        started.append((begin, s, task))
        pointers[s] += 1
        progressed = True
    if not progressed:
      stuck = {s: orders[s][pointers[s]] for s in range(p) if pointers[s] < len(orders[s])}
      raise ValueError(f"interleave_stages: the stage orders deadlock at {stuck}")
  started.sort(key=lambda item: (item[0], item[1]))
  return [(s, task) for _, s, task in started]
