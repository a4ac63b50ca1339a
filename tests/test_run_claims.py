"""The claim rules (reprolib/run/claims.py): noise-aware comparisons, regime checks, verdict levels."""
import numpy as np
import pytest

from reprolib.run import claims as C


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 10, 20, 30, 120):
        assert C.t95(df) == pytest.approx(stats.t.ppf(0.95, df), abs=1e-4)
    assert C.t95(22) >= stats.t.ppf(0.95, 22)   # between tabulated df: the conservative neighbour
    with pytest.raises(ValueError):
        C.t95(0)


def test_a_clear_paired_gain_passes_and_its_mirror_fails():
    adamw, conda = [1.50, 1.52, 1.49], [1.45, 1.47, 1.44]    # conda lower by 0.05 on every seed
    assert C.evaluate("adamw - conda > 0", dict(adamw=adamw, conda=conda))[0] == C.PASS
    assert C.evaluate("conda - adamw > 0", dict(adamw=adamw, conda=conda))[0] == C.FAIL


def test_a_gain_inside_the_seed_noise_is_inconclusive():
    adamw, conda = [1.50, 1.40, 1.60], [1.48, 1.45, 1.55]     # mean gain 0.007, paired sd 0.04
    outcome, parts = C.evaluate("adamw - conda > 0", dict(adamw=adamw, conda=conda))
    assert outcome == C.UNCLEAR
    d = np.subtract(adamw, conda)
    assert parts[0]["diff"] == pytest.approx(d.mean())
    assert parts[0]["noise"] == pytest.approx(C.t95(2) * d.std(ddof=1) / np.sqrt(3))


def test_the_margin_is_a_one_sided_t_test():
    """mean 1, sd 1 over n seeds: t = sqrt(n) passes only where sqrt(n) > t95(n - 1)."""
    for n, expected in ((3, C.UNCLEAR), (5, C.PASS)):   # sqrt(3)=1.73 < 2.92; sqrt(5)=2.24 > 2.13
        x = 1 + np.linspace(-1, 1, n) / np.std(np.linspace(-1, 1, n), ddof=1)
        assert C.evaluate("x > 0", dict(x=x.tolist()))[0] == expected


def test_a_threshold_claim_per_seed():
    assert C.evaluate("ratio <= 0.75", dict(ratio=[0.50, 0.52, 0.49]))[0] == C.PASS
    assert C.evaluate("ratio <= 0.75", dict(ratio=[0.74, 0.78, 0.71]))[0] == C.UNCLEAR
    assert C.evaluate("ratio <= 0.75", dict(ratio=[0.90, 0.92, 0.91]))[0] == C.FAIL


def test_single_values_are_decided_by_their_sign():
    assert C.evaluate("state_bytes == 0", dict(state_bytes=0))[0] == C.PASS
    assert C.evaluate("x >= 1", dict(x=1.0))[0] == C.PASS
    assert C.evaluate("x > 1", dict(x=1.0))[0] == C.FAIL
    assert C.evaluate("x < y", dict(x=2.0, y=1.0))[0] == C.FAIL


def test_and_or_and_chained_comparisons():
    m = dict(a=[1.0, 1.1, 0.9], b=[5.0, 5.1, 4.9], noisy=[0.1, -0.2, 0.15])
    assert C.evaluate("a < b and b > 4", m)[0] == C.PASS
    assert C.evaluate("a < b and b < 4", m)[0] == C.FAIL
    assert C.evaluate("a < b and noisy > 0", m)[0] == C.UNCLEAR
    assert C.evaluate("noisy > 0 or a < b", m)[0] == C.PASS
    assert C.evaluate("b < a or a > 3", m)[0] == C.FAIL
    assert C.evaluate("0.5 <= a <= 1.5", m)[0] == C.PASS
    assert C.evaluate("0.5 <= b <= 1.5", m)[0] == C.FAIL


def test_non_finite_values():
    assert C.evaluate("r <= 0.75", dict(r=float("nan")))[0] == C.FAIL
    assert C.evaluate("r <= 0.75", dict(r=[0.5, float("inf"), 0.6]))[0] == C.UNCLEAR
    assert C.evaluate("r <= 0.75", dict(r=[float("inf")] * 3))[0] == C.FAIL


def test_bad_criteria_fail_at_registration():
    with pytest.raises(SyntaxError):
        C.parse("x <=")
    with pytest.raises(SyntaxError, match="comparison"):
        C.parse("x + 1")
    with pytest.raises(KeyError, match="missing_name"):
        C.evaluate("missing_name > 0", {})
    with pytest.raises(ValueError, match="equal length"):
        C.evaluate("a > b", dict(a=[1, 2, 3], b=[1, 2]))


def test_regime_checks_hold_for_every_seed():
    assert C.holds_for_every_seed("loss < unigram - 0.5", dict(loss=[1.0, 1.1, 1.2], unigram=3.0))
    assert not C.holds_for_every_seed("loss < unigram - 0.5", dict(loss=[1.0, 2.9, 1.2], unigram=3.0))
    assert C.holds_for_every_seed("steps >= 100 and loss < 2", dict(steps=200, loss=[1.0, 1.5]))


@pytest.mark.parametrize("outcomes,verdict", [
    ([C.PASS, C.PASS], "reproduced"),
    ([C.FAIL, C.FAIL], "not reproduced"),
    ([C.UNCLEAR, C.UNCLEAR], "inconclusive"),
    ([C.PASS, C.FAIL], "partially reproduced"),
    ([C.PASS, C.UNCLEAR], "partially reproduced"),
    ([C.FAIL, C.UNCLEAR], "not reproduced"),
])
def test_verdict_levels(outcomes, verdict):
    assert C.verdict(outcomes) == verdict


def test_verdict_needs_a_headline():
    with pytest.raises(ValueError, match="headline"):
        C.verdict([])
