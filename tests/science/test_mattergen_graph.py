"""Tests of the periodic neighbour graph (science/mattergen/_graph.py) against brute force."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from tomioka_jax.science.mattergen import _crystal as cr
from tomioka_jax.science.mattergen import _graph as gr


def _batch(seed: int, b: int = 3, n: int = 5, skew: float = 0.6) -> cr.Crystals:
  rng = np.random.default_rng(seed)
  lat = np.stack([np.diag(rng.uniform(3.0, 5.0, 3)) + skew * rng.normal(size=(3, 3))
                  for _ in range(b)])
  lat[np.linalg.det(lat) < 0] *= -1.0
  nat = rng.integers(1, n + 1, b)
  nat[0] = n
  mask = np.arange(n)[None] < nat[:, None]
  frac = rng.uniform(0, 1, (b, n, 3)) * mask[..., None]
  types = rng.integers(0, 100, (b, n)) * mask
  return cr.Crystals(jnp.asarray(lat, jnp.float32), jnp.asarray(frac, jnp.float32),
                     jnp.asarray(types, jnp.int32), jnp.asarray(mask))


def _brute_force(c: cr.Crystals, cutoff: float, reach: int = 6) -> list[set]:
  """Every (i, j, n) with 0 < |(f_j + n - f_i) L| <= cutoff, n in {-reach..reach}^3."""
  out = []
  lat, frac, mask = (np.asarray(x, np.float64) for x in (c.lattice, c.frac_coords, c.mask))
  shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
  for bi in range(lat.shape[0]):
    edges = set()
    idx = np.flatnonzero(mask[bi])
    for i, j in itertools.product(idx, idx):
      d = np.linalg.norm((frac[bi, j] + shifts - frac[bi, i]) @ lat[bi], axis=-1)
      for s in np.flatnonzero((d > 0) & (d <= cutoff)):
        edges.add((int(i), int(j), tuple(int(v) for v in shifts[s]), round(float(d[s]), 3)))
    out.append(edges)
  return out


def _graph_edges(g: gr.PeriodicGraph) -> list[set]:
  out = []
  nb, off, dist, mask = (np.asarray(x) for x in (g.neighbors, g.offsets, g.distances, g.mask))
  for bi in range(mask.shape[0]):
    edges = set()
    for i, s in zip(*np.nonzero(mask[bi])):
      edges.add((int(i), int(nb[bi, i, s]), tuple(int(v) for v in off[bi, i, s]),
                 round(float(dist[bi, i, s]), 3)))
    out.append(edges)
  return out


def test_image_offsets_and_widths():
  s = gr.image_offsets(1)
  assert s.shape == (27, 3) and np.all(s[0] == 0)
  assert len({tuple(v) for v in s}) == 27
  # Perpendicular widths of a cubic cell are its edge; of a sheared cell, volume / face area.
  lat = np.array([[[2.0, 0, 0], [1.0, 3.0, 0], [0, 0, 4.0]]])
  w = np.asarray(gr.perpendicular_widths(jnp.asarray(lat)))[0]
  vol = abs(np.linalg.det(lat[0]))
  faces = [np.linalg.norm(np.cross(lat[0, 1], lat[0, 2])),
           np.linalg.norm(np.cross(lat[0, 2], lat[0, 0])),
           np.linalg.norm(np.cross(lat[0, 0], lat[0, 1]))]
  np.testing.assert_allclose(w, vol / np.array(faces), rtol=1e-6)
  # w_a is 1 / |column a of L^{-1}| (the reciprocal vector's length).
  np.testing.assert_allclose(w, 1.0 / np.linalg.norm(np.linalg.inv(lat[0]), axis=0), rtol=1e-6)


@pytest.mark.parametrize("max_neighbors", [None, 200])
def test_graph_matches_brute_force_enumeration(max_neighbors):
  c = _batch(0)
  cutoff = 4.0
  need = int(np.asarray(gr.required_images(c.lattice, cutoff)).max())
  g = gr.periodic_graph(c, cutoff=cutoff, max_neighbors=max_neighbors, max_images=need)
  assert bool(np.all(np.asarray(g.complete)))
  assert _graph_edges(g) == _brute_force(c, cutoff)
  # Vectors are (f_j + n - f_i) L, masked slots zero, padding atoms without edges.
  lat, frac = np.asarray(c.lattice), np.asarray(c.frac_coords)
  nb, off, vec, msk = (np.asarray(x) for x in (g.neighbors, g.offsets, g.vectors, g.mask))
  bi, i, s = np.nonzero(msk)
  ref = np.einsum("ed,edf->ef",
                  frac[bi, nb[bi, i, s]] + off[bi, i, s] - frac[bi, i], lat[bi])
  np.testing.assert_allclose(vec[bi, i, s], ref, atol=1e-5)
  assert np.all(vec[~msk] == 0)
  assert not np.any(msk[~np.asarray(c.mask)])


def test_required_images_cover_the_cutoff_sphere():
  # With K = required_images the graph has every edge; with one fewer image (for the most
  # demanding direction) edges go missing and the graph says it is incomplete.
  c = _batch(1, b=2, skew=1.0)
  cutoff = 5.0
  need = np.asarray(gr.required_images(c.lattice, cutoff))
  brute = _brute_force(c, cutoff, reach=int(need.max()) + 3)
  full = gr.periodic_graph(c, cutoff=cutoff, max_neighbors=None, max_images=int(need.max()))
  assert _graph_edges(full) == brute
  small = gr.periodic_graph(c, cutoff=cutoff, max_neighbors=None, max_images=int(need.min()) - 1)
  assert not bool(np.all(np.asarray(small.complete)))
  assert sum(map(len, _graph_edges(small))) < sum(map(len, brute))


def test_top_k_keeps_the_nearest_and_flags_truncation():
  c = _batch(2)
  cutoff, k = 4.0, 6
  need = int(np.asarray(gr.required_images(c.lattice, cutoff)).max())
  g = gr.periodic_graph(c, cutoff=cutoff, max_neighbors=k, max_images=need)
  full = gr.periodic_graph(c, cutoff=cutoff, max_neighbors=None, max_images=need)
  assert g.neighbors.shape == c.mask.shape + (k,)
  d_k = np.where(np.asarray(g.mask), np.asarray(g.distances), np.inf)
  d_all = np.sort(np.where(np.asarray(full.mask), np.asarray(full.distances), np.inf), axis=-1)
  np.testing.assert_allclose(np.sort(d_k, axis=-1), d_all[..., :k], rtol=1e-6)
  within = np.asarray(full.mask).sum(-1)
  np.testing.assert_array_equal(np.asarray(g.complete), np.all(within <= k, axis=-1))
  assert not bool(np.all(np.asarray(g.complete)))


def test_integer_shifts_of_fractional_coordinates_give_the_same_graph():
  c = _batch(3)
  shifted = c._replace(frac_coords=c.frac_coords + jnp.asarray([1.0, -2.0, 3.0])[None, None])
  kw = dict(cutoff=4.0, max_neighbors=None, max_images=3)
  d0 = np.sort(np.asarray(gr.periodic_graph(c, **kw).distances), axis=-1)
  d1 = np.sort(np.asarray(gr.periodic_graph(shifted, **kw).distances), axis=-1)
  np.testing.assert_allclose(d0, d1, atol=1e-4)


def test_bad_arguments_raise():
  c = _batch(0)
  with pytest.raises(ValueError, match="cutoff must be"):
    gr.periodic_graph(c, cutoff=-1.0, max_neighbors=None, max_images=1)
  with pytest.raises(ValueError, match="max_neighbors must be"):
    gr.periodic_graph(c, cutoff=3.0, max_neighbors=0, max_images=1)
  with pytest.raises(ValueError, match="max_images must be"):
    gr.periodic_graph(c, cutoff=3.0, max_neighbors=None, max_images=-1)
