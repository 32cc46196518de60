"""A do-file's preamble and files: ``use`` of a Stata dataset (.dta), ``clear``, ``capture``, and ``log using`` …
``log close`` writing what the run prints in between."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm.cli import main
from jaxhlm.dofile import DoFileError, run_do
from jaxhlm.render import stata_g


@pytest.fixture
def dta(hsb, tmp_path):
    """HSB as a Stata dataset written by pandas: sector value-labelled, ses missing on the first rows."""
    d = hsb.drop(columns="sized_1").assign(ses=lambda f: f["ses"].mask(f.index < 3))
    path = tmp_path / "hsb.dta"
    d.to_stata(path, write_index=False, value_labels={"sector": {0: "public", 1: "catholic"}})
    return path, d


def test_use_of_a_stata_dataset(dta, tmp_path, capsys):
    path, d = dta
    want = jaxhlm.mixed("mathach ses i.sector || id:", d)
    # without an extension use reads FILE.dta; value labels leave the codes, as Stata's use does
    log = run_do(f"use {path.with_suffix('')}, clear\nsummarize sector\nmixed mathach ses i.sector || id:")
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in log and "Number of obs     =      7,182" in log
    assert "      sector |      7,185    .4931106" in log
    assert main(["fit", "mathach ~ ses + sector + (1 | id)", "--data", str(path)]) == 0
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in capsys.readouterr().out
    bad = tmp_path / "bad.dta"
    bad.write_text("not a Stata file")
    with pytest.raises(DoFileError, match=r"line 1: cannot read .*bad.dta' as a Stata dataset"):
        run_do(f"use {bad}")
    with pytest.raises(DoFileError, match=r"use reads Stata datasets \(.dta\) and CSV files"):
        run_do(f"use {tmp_path / 'x.xlsx'}")


def test_clear_capture_and_a_log_file(dta, tmp_path):
    path, d = dta
    logfile = tmp_path / "run.log"
    text = (f"clear all\nset more off\ncapture log close\nlog using {logfile.with_suffix('')}, replace text\n"
            f"use {path}\ndi _N\ncapture drop nosuch\ncapture noisuchcommand\nquietly mixed mathach ses || id:\n"
            "di e(ll)\nlog close\ndi \"after\"")
    log = run_do(text)
    written = logfile.read_text()
    ll = jaxhlm.mixed("mathach ses || id:", d).llf
    assert written.index("opened on:") < written.index(". use ") < written.index("\n7185\n") < written.index(
        f"\n{stata_g(ll, 8)}\n") < written.index(". log close") < written.index("closed on:")
    assert "after" not in written and "\n. di \"after\"\nafter\n" in log
    assert f"       log:  {logfile.resolve()}" in written
    # clear empties the data; clear all forgets the estimates too
    with pytest.raises(DoFileError, match="line 4: last estimates not found"):
        run_do(f"use {path}\nquietly mixed mathach ses || id:\nclear all\nmixed")
    with pytest.raises(DoFileError, match=f"line 1: file {logfile} already exists; add replace"):
        run_do(f"log using {logfile}, text")
    with pytest.raises(DoFileError, match="line 1: option smcl not allowed; jaxhlm writes text logs"):
        run_do(f"log using {tmp_path / 'other'}, smcl")
    with pytest.raises(DoFileError, match="line 1: no log file open"):
        run_do("log close")
    appended = run_do(f"log using {logfile}, append\ndi 1 + 1\nlog close")
    assert "\n2\n" in appended and logfile.read_text().startswith(written) and logfile.read_text().count("\n2\n") == 1
    assert np.isnan(pd.read_stata(path)["ses"][:3]).all()  # the fixture's missing values, which use left out


def test_sort_rename_preserve_restore_and_variable_labels(hsb):
    text = ("preserve\nkeep if sector == 1\nquietly mixed mathach ses || id:\ndi e(N)\nrestore\ndi _N\n"
            "sort ses id\nrename mathach math\nlabel variable sized \"School size\"\ntab sized\n"
            "mixed math ses || id:")
    log = run_do(text, hsb)
    assert ". di e(N)\n3,642\n" not in log and f". di e(N)\n{int((hsb['sector'] == 1).sum())}\n" in log
    assert ". di _N\n7185\n" in log
    assert "     School |\n       size |      Freq." in log
    want = jaxhlm.mixed("mathach ses || id:", hsb)
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in log and "        math | Coefficient" in log
    # value labels are part of the data: restore brings back the preserved ones, rename carries them
    labelled = run_do('label define yesno 0 "no" 1 "yes"\nlabel values female yesno\npreserve\nlabel values female\n'
                      "restore\nrename female girl\ntab girl", hsb)
    assert f"         no |{(hsb['female'] == 0).sum():>11,}" in labelled
    from jaxhlm.dofile import Session

    session = Session(hsb.copy())
    for line in ("sort ses id", "rename female girl"):
        session.run(*line.partition(" ")[::2])
    assert list(session.data["ses"]) == sorted(hsb["ses"]) and "girl" in session.data and "female" not in session.data
    with pytest.raises(jaxhlm.JaxhlmError, match="nothing to restore: run preserve first"):
        session.run("restore", "")
    with pytest.raises(jaxhlm.JaxhlmError, match="variable ses already defined"):
        session.run("rename", "girl ses")


def test_merge_a_school_file_onto_its_students(hsb, tmp_path):
    """merge m:1 id using schools: the school variables joined on id, _merge counting each side, Stata's table of
    results; the fit on the merged data is the fit on the joined frame."""
    students = hsb[["id", "mathach", "ses", "sector"]].rename(columns={"sector": "sector_own"})
    schools = hsb.groupby("id", as_index=False)[["sector", "meanses"]].first()
    students.to_stata(tmp_path / "stu.dta", write_index=False)
    schools.iloc[2:].assign(extra=1.0).to_stata(tmp_path / "sch.dta", write_index=False)
    dropped = int(hsb["id"].isin(schools["id"].iloc[:2]).sum())
    log = run_do(f"use {tmp_path / 'stu'}\nmerge m:1 id using {tmp_path / 'sch'}, keepusing(sector meanses)\n"
                 "mixed mathach ses i.sector meanses || id:", hsb)
    assert dropped == 72  # the first two schools' students
    assert ("    Result                      Number of obs\n"
            "    -----------------------------------------\n"
            "    Not matched                            72\n"
            "        from master                        72  (_merge==1)\n"
            "        from using                          0  (_merge==2)\n"
            "\n"
            "    Matched                             7,113  (_merge==3)\n"
            "    -----------------------------------------\n") in log
    joined = hsb[~hsb["id"].isin(schools["id"].iloc[:2])]
    want = jaxhlm.mixed("mathach ses i.sector meanses || id:", joined)
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in log and "extra" not in log
    from jaxhlm.dofile import Session

    session = Session(students.copy(), base_dir=tmp_path)
    out = session.run("merge", "m:1 id using sch, keep(match) nogenerate")
    assert "Matched" in out and len(session.data) == len(hsb) - dropped and "_merge" not in session.data
    assert set(session.data.columns) == {"id", "mathach", "ses", "sector_own", "sector", "meanses", "extra"}
    with pytest.raises(jaxhlm.JaxhlmError, match="variable id does not uniquely identify observations in the master"):
        session.run("merge", "1:1 id using sch")
    with pytest.raises(jaxhlm.JaxhlmError, match="variable ses not found in the using data sch.dta"):
        session.run("merge", "m:1 ses using sch")
    with pytest.raises(jaxhlm.JaxhlmError, match="merge needs: merge 1:1|m:1|1:m varlist using FILE"):
        session.run("merge", "m:m id using sch")


def test_reshape_long_and_back(tmp_path):
    """reshape long turns a subject's y0…y9 into rows at times 0…9 (a missing visit a missing y), which refit as
    the long data do; reshape wide gives the wide data back."""
    from ar1_cases import data
    from jaxhlm.dofile import Session

    d = data()
    wide = d.pivot(index="id", columns="time", values="y").add_prefix("y").reset_index().assign(arm=lambda f: f["id"] % 2)
    wide.columns.name = None
    session = Session(wide.copy(), base_dir=tmp_path)
    out = session.run("reshape", "long y, i(id) j(time)")
    assert out.splitlines()[:6] == ["(j = 0 1 2 3 4 5 6 7 8 9)", "", "Data                               Wide   ->   Long",
                                    "-" * 77, "Number of observations               80   ->   800",
                                    "Number of variables                  12   ->   4"]
    assert "          y0 y1 y2 y3 y4 y5 y6 y7 y8 y9   ->   y" in out
    long = session.data
    assert list(long.columns) == ["id", "time", "y", "arm"] and len(long) == 800
    seen = long.dropna(subset=["y"]).merge(d, on=["id", "time"], suffixes=("", "_d"))
    assert len(seen) == len(d) and np.array_equal(seen["y"], seen["y_d"])
    ours = jaxhlm.mixed("y time || id:, residuals(ar 1, t(time))", long)
    assert ours.llf == pytest.approx(jaxhlm.mixed("y time || id:, residuals(ar 1, t(time))", d).llf, abs=1e-9)
    out = session.run("reshape", "wide y, i(id) j(time)")
    assert "Number of observations              800   ->   80" in out
    back = session.data
    pd.testing.assert_frame_equal(back[wide.columns].reset_index(drop=True), wide.reset_index(drop=True),
                                  check_dtype=False)
    with pytest.raises(jaxhlm.JaxhlmError, match="variable arm does not uniquely identify the observations"):
        session.run("reshape", "long y, i(arm) j(t)")
    with pytest.raises(jaxhlm.JaxhlmError, match=r"variable score# not found: reshape long needs score1"):
        session.run("reshape", "long score, i(id) j(t)")
    session.run("reshape", "long y, i(id) j(time)")
    session.data["noise"] = np.arange(len(session.data))
    with pytest.raises(jaxhlm.JaxhlmError, match="variable noise not constant within id"):
        session.run("reshape", "wide y, i(id) j(time)")


def test_collapse_save_tempfile_and_merge_back(hsb, tmp_path):
    """The school means by collapse, saved to a tempfile and merged back onto the students: the fit with
    group-mean centring is the API's on the same columns (doubles: collapse keeps the data's precision)."""
    text = ("preserve\ncollapse (mean) mses=ses (sd) sdses=ses (count) n=ses (max) top=mathach, by(id)\n"
            "tempfile schools\nsave `schools'\nrestore\nmerge m:1 id using `schools', nogenerate\n"
            "gen double ses_c = ses - mses\nmixed mathach ses_c mses || id:")
    log = run_do(text, hsb)
    g = hsb.groupby("id")
    d = hsb.assign(mses=g["ses"].transform("mean"))
    want = jaxhlm.mixed("mathach ses_c mses || id:", d.assign(ses_c=d["ses"] - d["mses"]))
    assert f"Log likelihood = {stata_g(want.llf, 8)}" in log and "\n. save `schools'\nfile " in log
    from jaxhlm.dofile import Session

    session = Session(hsb.copy(), base_dir=tmp_path)
    session.run("collapse", "(mean) mses=ses (sd) sdses=ses (count) n=ses (max) top=mathach if female, by(id)")
    girls = hsb[hsb["female"] == 1].groupby("id")
    np.testing.assert_allclose(session.data["mses"], girls["ses"].mean())
    np.testing.assert_allclose(session.data["sdses"], girls["ses"].std())
    np.testing.assert_array_equal(session.data["n"], girls["ses"].count())
    np.testing.assert_array_equal(session.data["top"], girls["mathach"].max())
    assert list(session.data.columns) == ["id", "mses", "sdses", "n", "top"]
    out = session.run("save", f"{tmp_path / 'girls'}")
    assert out == f"file {tmp_path / 'girls.dta'} saved"
    pd.testing.assert_frame_equal(pd.read_stata(tmp_path / "girls.dta"), session.data, check_dtype=False)
    with pytest.raises(jaxhlm.JaxhlmError, match="already exists; add replace"):
        session.run("save", f"{tmp_path / 'girls'}")
    with pytest.raises(jaxhlm.JaxhlmError, match=r"collapse computes mean, .*; got \(iqr\)"):
        session.run("collapse", "(iqr) mses")
    with pytest.raises(jaxhlm.JaxhlmError, match="collapse would create mses twice"):
        session.run("collapse", "(mean) mses (sd) mses, by(id)")
