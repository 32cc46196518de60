"""Stata's ``testparm``: joint Wald tests of the coefficients of factor-variable terms (:meth:`MixedResult.testparm`
and the do-file command), checked against the same constraints written out for ``test``."""

from __future__ import annotations

import numpy as np
import pytest

import jaxhlm
from jaxhlm import JaxhlmError

M5 = "mathach c.ses##c.sector i.female##i.sized || id:"


@pytest.fixture(scope="module")
def m5(hsb):
    return jaxhlm.mixed(M5, hsb)


@pytest.mark.parametrize("varlist, equal, constraints", [
    ("i.sized", False, ["2.sized", "3.sized"]),  # the main effect's levels, not the interaction's
    ("i.female#i.sized", False, ["1.female#2.sized", "1.female#3.sized"]),
    ("ses c.ses#c.sector", False, ["ses", "c.ses#c.sector"]),
    ("i.sized", True, ["3.sized - 2.sized = 0"]),
])
def test_testparm_is_test_of_the_terms_coefficients(m5, varlist, equal, constraints):
    got, want = m5.testparm(varlist, equal=equal), m5.test(constraints)
    assert got.df == want.df == len(constraints)
    np.testing.assert_allclose([got.statistic, got.pvalue], [want.statistic, want.pvalue], rtol=1e-12)
    assert str(got) == str(want)


def test_testparm_in_a_do_file_and_its_refusals(m5, hsb):
    log = jaxhlm.run_do(f"mixed {M5}\ntestparm i.sized\ntestparm i.sized, equal")
    assert (". testparm i.sized\n\n ( 1)  [mathach]2.sized = 0\n ( 2)  [mathach]3.sized = 0\n\n"
            "           chi2(  2) =   10.00\n         Prob > chi2 =    0.0067") in log
    assert " ( 1)  -[mathach]2.sized + [mathach]3.sized = 0\n\n           chi2(  1) =    1.14" in log
    with pytest.raises(JaxhlmError, match="no coefficient of the model"):
        m5.testparm("i.minority")
    with pytest.raises(JaxhlmError, match="equal needs two coefficients"):
        m5.testparm("ses", equal=True)
    with pytest.raises(JaxhlmError, match="written as a formula"):
        jaxhlm.fit("mathach ~ ses + C(sized) + (1 | id)", hsb).testparm("i.sized")
    with pytest.raises(JaxhlmError, match="option detail not allowed"):
        jaxhlm.run_do(f"mixed {M5}\ntestparm i.sized, detail")
