"""The normal, t and chi-squared functions written for the service agree with scipy.stats."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tessera.experiments.domain.statistics.distributions import (
    chi2_sf,
    norm_cdf,
    norm_ppf,
    norm_sf,
    t_ppf,
    t_sf,
)

DEGREES = [1, 1.5, 2, 3.7, 10, 57.3, 1000, 6000, 1e5, 1e6]


@pytest.mark.parametrize("df", DEGREES)
def test_t_sf__scalar_and_array__as_scipy(df):
    t = np.random.default_rng(1).normal(0, 3, 100)

    expected = stats.t.sf(t, df)
    assert np.allclose(t_sf(t, df), expected, rtol=1e-9, atol=0)
    assert [float(t_sf(v, df)) for v in t[:10]] == pytest.approx(expected[:10], rel=1e-9)


@pytest.mark.parametrize("df", DEGREES)
def test_t_ppf__scalar_and_array__as_scipy(df):
    p = np.random.default_rng(2).uniform(1e-4, 1 - 1e-4, 100)
    dfs = df * np.random.default_rng(3).uniform(1, 1.01, 100)

    expected = stats.t.ppf(p, dfs)
    assert np.allclose(t_ppf(p, dfs), expected, rtol=1e-9, atol=0)
    assert float(t_ppf(0.975, df)) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)


def test_t__edges():
    assert float(t_sf(np.inf, 5)) == 0.0
    assert float(t_sf(-np.inf, 5)) == 1.0
    assert float(t_sf(1.3, np.inf)) == pytest.approx(stats.norm.sf(1.3), rel=1e-12)
    assert np.isnan(t_sf(1.0, 0.0))
    assert float(t_ppf(0.5, 7)) == 0.0
    assert float(t_ppf(1.0, 7)) == np.inf


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 9, 10, 99])
def test_chi2_sf__as_scipy(k):
    x = np.random.default_rng(k).uniform(0, 60, 50)

    assert np.allclose(chi2_sf(x, k), stats.chi2.sf(x, k), rtol=1e-10, atol=0)


def test_normal__as_scipy():
    x = np.linspace(-9, 9, 181)
    p = np.linspace(1e-9, 1 - 1e-9, 1001)

    assert np.allclose(norm_cdf(x), stats.norm.cdf(x), rtol=1e-12, atol=0)
    assert np.allclose(norm_sf(x), stats.norm.sf(x), rtol=1e-12, atol=0)
    assert np.allclose(norm_ppf(p), stats.norm.ppf(p), rtol=1e-12, atol=1e-15)
