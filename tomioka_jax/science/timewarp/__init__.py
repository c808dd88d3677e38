"""Timewarp (Klein, Foong, Fjelde, Mlodozeniec, Brockschmidt, Nowozin, Noé, Tomioka 2023):
transferable acceleration of molecular dynamics by a learned time-coarsened conditional flow
p(x_{t+tau} | x_t) used as a Metropolis-Hastings proposal.
"""

__all__: list[str] = []
