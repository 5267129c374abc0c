"""The numeric frontier search: an optimum it cannot bracket is not a value."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from orchestrator.laws import Farseer
from orchestrator.laws.farseer import FarseerForm
from orchestrator.laws.frontier import frontier_logs
from workers.simulated import FarseerTruth

FORM = FarseerForm(
    log_n0=math.log(1e9), log_d0=math.log(2e10), x_n=np.zeros((1, 1)), x_d=np.zeros((1, 1))
)
# theta = (s_c, q, S, B_c, b, Q_c, A_c, a, E): a model term falling to a floor and a data
# term with exponent 0.3, Chinchilla's shape.
BOTH_TERMS = np.array([0.5, -0.3, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0, math.log(0.3)])


def test_an_optimum_beyond_the_search_is_infinite_on_its_side_with_no_loss():
    model_only = BOTH_TERMS.copy()
    model_only[5] = -60.0  # no data term: the loss falls with N all along the line
    data_only = BOTH_TERMS.copy()
    data_only[0], data_only[2] = 0.0, -10.0  # no model term: it falls as D grows
    law = SimpleNamespace(form_=FORM, flops_per_token=None)
    log_c = np.log([1e22])
    log_n, log_d, log_l = frontier_logs(law, np.stack([BOTH_TERMS, model_only, data_only]), log_c)
    # Before, both came back as the search's edge, 4 decades either side, with a loss.
    assert np.isfinite(log_n[0, 0]) and log_n[1, 0] == np.inf and log_n[2, 0] == -np.inf
    assert np.isfinite(log_l[0, 0]) and np.isnan(log_l[1:, 0]).all()
    assert log_d[1, 0] == -np.inf and log_d[2, 0] == np.inf
    # The bracketed one is a minimum of the line.
    n_opt = math.exp(log_n[0, 0])
    for factor in (0.8, 1.25):
        n = np.log([[n_opt * factor]])
        log_other, _ = FORM.log_loss_at(
            BOTH_TERMS[None], *FORM.centred(n, log_c[0] - np.log(6 * np.exp(n))), jac=False
        )
        assert log_other[0, 0] > log_l[0, 0]


def test_an_interior_optimum_wins_over_a_collapse_beyond_the_runs():
    # A Farseer fit to a 5 x 9 IsoFLOP grid (1e18-1e20 FLOPs) of its own form: along the
    # line at 1e22 it dips to the truth's optimum, then, past the largest run at a few
    # tokens per parameter, loses its data term and falls until it has no value there.
    truth = FarseerTruth.drawn(0)
    flops = np.repeat(np.logspace(18, 20, 5), 9)
    n = np.sqrt(flops / 120) * np.tile(np.logspace(-0.6, 0.6, 9), 5)
    d = flops / (6 * n)
    noise = np.exp(0.005 * np.random.default_rng(0).standard_normal(n.size))
    law = Farseer().fit(n, d, truth.loss(n, d) * noise)
    true = truth.optimum(1e22)["n_opt"]
    n_opt = float(law.frontier(1e22).n_opt.mean)
    # Before, the least loss of the line: 1.6e12 parameters at 1e-3 tokens per parameter.
    assert abs(math.log(n_opt / true)) < math.log(1.3)
