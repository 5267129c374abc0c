"""Bad input, fuzzed with hypothesis: plan files, `orch` argument lists, and the CSV and
Parquet tables `orch fit` reads. Every input must end in a result or one clear error
(an OrchError, or argparse's usage error); any other exception is a traceback a user
would see, and the count of those must be 0.

Example counts: FAULTS_FULL=1 (`make test-faults-full`) runs 10,000 plans, 2,000 argument
lists and 1,000 tables; by default (`make test`) 400, 300 and 60. The figures are printed
(pytest -s shows them). tests/orchestrator/planning/test_plan_fuzz.py mutates plan text; the plan
fuzz here also mutates the parsed structure and runs the planner on plans that load.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import traceback

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml
from _faults import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.laws import fit_path
from orchestrator.planning import PlanError, load_plan
from orchestrator.planning.expand import expand_plan
from storage.errors import OrchError
from tests.plans import plan_text

FULL = os.environ.get("FAULTS_FULL") == "1"
N_PLANS = 10_000 if FULL else 400
N_ARGV = 2_000 if FULL else 300
N_TABLES = 1_000 if FULL else 60
GOOD = {
    name: plan_text(name)
    for name in ("local.yaml", "chinchilla.yaml", "simulated.yaml", "adaptive.yaml")
    if (ROOT / "plans" / name).exists()
}
_SETTINGS = dict(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,  # each run explores afresh; the seed below makes it repeatable
    derandomize=True,
)


class Tally:
    """What a fuzz run saw: examples, each outcome, and the tracebacks (must stay [])."""

    def __init__(self) -> None:
        self.examples = 0
        self.outcomes: dict[str, int] = {}
        self.tracebacks: list[str] = []

    def add(self, outcome: str) -> None:
        self.examples += 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def crash(self, what: str) -> None:
        self.add("traceback")
        self.tracebacks.append(f"{what}\n{traceback.format_exc(limit=-4)}")

    def report(self, capsys, name: str) -> None:
        with capsys.disabled():
            print(
                f"\n{name}: {self.examples} examples, outcomes {self.outcomes}, "
                f"tracebacks {len(self.tracebacks)}"
            )
            for text in self.tracebacks[:3]:  # the first few in full, to fix them
                print(text)


# -- plans ------------------------------------------------------------------------------------
_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(), max_size=2),
    st.sampled_from(["1e400", "-1", "0", "lots", "../x", "/etc", "cosine", "wsd", "nan"]),
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(node, path, value):
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()


@st.composite
def mutated_plans(draw):
    name = draw(st.sampled_from(sorted(GOOD)))
    text = GOOD[name]
    if draw(st.booleans()):  # structural: values of the wrong kind, missing or extra keys
        tree = yaml.safe_load(text)
        for _ in range(draw(st.integers(1, 3))):
            paths = [p for p in _paths(tree) if p]
            path = draw(st.sampled_from(paths))
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                _set(tree, path, draw(_junk))
            elif action == "delete":
                _set(tree, path, _DELETE)
            else:
                parent = tree
                for key in path[:-1]:
                    parent = parent[key]
                if isinstance(parent, dict):
                    parent[draw(st.text("xyz_", min_size=1, max_size=4))] = draw(_junk)
            if not isinstance(tree, dict):
                break
        return yaml.safe_dump(tree, sort_keys=False)
    lines = text.splitlines()  # textual: characters, indentation, lines moved
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["chars", "indent", "drop", "dup", "value"]))
        if kind == "chars":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(st.text(max_size=4)) + lines[i][pos:]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + lines[i]
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + str(draw(_junk))
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_fuzzed_plans_load_and_plan_or_fail_with_one_plan_error_line(tmp_path, capsys):
    tally = Tally()
    path = tmp_path / "fuzz.yaml"
    store = tmp_path / "store"

    @settings(max_examples=N_PLANS, **_SETTINGS)
    @given(text=mutated_plans())
    def one(text):
        # The store the plan names is ours: a fuzzed plan must not write elsewhere.
        text = re.sub(r"(?m)^store:.*$", f"store: {store}", text)
        path.write_text(text, errors="surrogatepass")
        try:
            plan = load_plan(path)
        except PlanError as err:
            message = str(err)
            if not message.startswith(f"{path}:") or "\n" in message.strip():
                tally.add("malformed PlanError")
                tally.tracebacks.append(message)
                return
            tally.add("PlanError")
            return
        except Exception:
            tally.crash(text)
            return
        try:
            expand_plan(plan)
            tally.add("planned")
        except OrchError:
            tally.add("OrchError from the planner")
        except Exception:
            tally.crash(text)

    one()
    tally.report(capsys, "plans")
    assert tally.tracebacks == []
    assert tally.outcomes.get("planned", 0) > 0 and tally.outcomes.get("PlanError", 0) > 0


# -- CLI arguments ----------------------------------------------------------------------------
@pytest.fixture
def cli_files(tmp_path, monkeypatch):
    """Files the fuzzed arguments may name; none of them is a plan that would run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.yaml").write_bytes(b"\x00\xff: [\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "few.csv").write_text("N,D,loss\n1e6,1e8,3.0\n2e6,2e8,2.9\n")
    (tmp_path / "junk.csv").write_bytes(os.urandom(200))
    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + os.urandom(100))
    (tmp_path / "dir").mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "plan.yaml").write_text("name: [\n")
    return tmp_path


_WORDS = [
    "submit",
    "resume",
    "cancel",
    "plan",
    "status",
    "fit",
    "report",
    "--debug",
    "--verbose",
    "--help",
    "--bootstrap",
    "--seed",
    "--form",
    "--json",
    "chinchilla",
    "kaplan",
    "garbage.yaml",
    "empty.yaml",
    "list.yaml",
    "missing.yaml",
    "few.csv",
    "junk.csv",
    "junk.parquet",
    "dir",
    "exp",
    "exp/plan.yaml",
    "../..",
    "/",
    "",
    "-",
    "--",
    "-1",
    "0",
    "3",
    "1e3",
    "nan",
    "x" * 300,
    "\x00",
    "é",
    "--bootstrap=-5",
    "--seed=abc",
]


_COMMANDS = ["submit", "resume", "cancel", "plan", "status", "fit"]
_FILES = [w for w in _WORDS if "." in w or w in ("dir", "exp", "/", "../..", "")]
# Not fuzzed: `status --watch` refreshes until Ctrl-C by design, and `--address` reaches
# for a network cluster.
_OPTIONS = ["--bootstrap", "--seed", "--form", "--json", "--verbose", "--help"]


@st.composite
def argument_lists(draw):
    # Mostly shaped like a command line (a command, a path, options with values), so that
    # the fuzz reaches the commands and not only argparse; sometimes any tokens at all.
    if draw(st.integers(0, 4)) == 0:
        return draw(st.lists(st.sampled_from(_WORDS) | st.text(max_size=6), max_size=6))
    argv = [draw(st.sampled_from(_COMMANDS)), draw(st.sampled_from(_FILES) | st.text(max_size=8))]
    for _ in range(draw(st.integers(0, 3))):
        argv.append(draw(st.sampled_from(_OPTIONS)))
        if draw(st.booleans()):
            argv.append(draw(st.sampled_from(_WORDS) | st.text(max_size=6)))
    return argv


@pytest.mark.slow
def test_fuzzed_argument_lists_give_a_result_or_one_error_line(cli_files, capsys):
    tally = Tally()

    @settings(max_examples=N_ARGV, **_SETTINGS)
    @given(argv=argument_lists())
    def one(argv):
        if "--debug" in argv:  # --debug asks for tracebacks: not what a user sees
            argv = [a for a in argv if a != "--debug"]
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
            tally.add(f"exit {code}")
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            tally.add(f"argparse exit {exc.code}")
        except Exception:
            tally.crash(repr(argv))

    one()
    tally.report(capsys, "argument lists")
    assert tally.tracebacks == []


# -- tables for `orch fit` --------------------------------------------------------------------
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e3, max_value=1e12),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.none(),
    st.text(max_size=5),
)


@st.composite
def fit_tables(draw):
    kind = draw(st.sampled_from(["numbers", "mixed", "sane"]))
    if kind == "sane":  # the columns a fit needs, plausible values: fits, some degenerate
        names = draw(st.sampled_from([["N", "D", "loss"], ["N", "C", "loss", "run_id"]]))
    else:
        names = draw(
            st.lists(
                st.sampled_from(["N", "D", "C", "loss", "run_id", "n", "Loss", "x", ""]),
                max_size=5,
                unique=True,
            )
        )
    rows = draw(st.integers(5 if kind == "sane" else 0, 12))
    columns = {}
    for name in names:
        if kind == "sane" and name in ("N", "D", "C", "loss"):
            low = {"N": 1e6, "D": 1e8, "C": 1e15, "loss": 2.0}[name]
            columns[name] = draw(st.lists(st.floats(low, low * 100), min_size=rows, max_size=rows))
        elif kind == "sane":
            columns[name] = [f"r{i}" for i in range(rows)]
        elif kind == "numbers":
            columns[name] = draw(
                st.lists(
                    st.floats(allow_nan=True, allow_infinity=True), min_size=rows, max_size=rows
                )
            )
        else:
            columns[name] = [
                str(v) if v is not None else None
                for v in draw(st.lists(_values, min_size=rows, max_size=rows))
            ]
    form = draw(st.sampled_from(["csv", "parquet", "bytes"]))
    return columns, form, draw(st.binary(max_size=64))


@pytest.mark.slow
def test_fuzzed_fit_tables_give_a_fit_or_one_fit_error(tmp_path, capsys):
    tally = Tally()

    @settings(max_examples=N_TABLES, **_SETTINGS)
    @given(case=fit_tables(), fit_form=st.sampled_from(["chinchilla", "kaplan"]))
    def one(case, fit_form):
        columns, form, noise = case
        path = tmp_path / f"t.{'parquet' if form == 'parquet' else 'csv'}"
        table = pa.table({k: pa.array(v) for k, v in columns.items()}) if columns else None
        if form == "bytes" or table is None:
            path.write_bytes(noise)
        elif form == "csv":
            sink = io.BytesIO()
            pa_csv.write_csv(table, sink)
            path.write_bytes(sink.getvalue())
        else:
            pq.write_table(table, path)
        try:
            report = fit_path(path, form=fit_form)
            # A non-finite parameter is acceptable only in a fit flagged unreliable.
            ok = not report.reliable or all(np.isfinite(p.value) for p in report.params)
            tally.add("fit" if ok else "non-finite parameter")
            if not ok:
                tally.tracebacks.append(f"reliable fit, non-finite {report.params} {columns}")
        except OrchError as err:
            tally.add(type(err).__name__)
            if "\n" in str(err).strip():
                tally.tracebacks.append(f"multi-line error: {err}")
        except Exception:
            tally.crash(repr(columns))

    one()
    tally.report(capsys, "fit tables")
    assert tally.tracebacks == []
