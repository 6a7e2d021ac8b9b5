"""Two terminal summary lines: how many cases the property-based tests (test_properties.py) ran, and that
no pool the suite built (tests/_e_harness.py make_pool) changed by a byte over the whole session
(tests/_input_guard.py); a pool that changed fails the session."""
import sys

import _input_guard


def pytest_terminal_summary(terminalreporter):
    props = sys.modules.get("test_properties")
    cases = getattr(props, "CASES", None)
    if cases:
        detail = ", ".join(f"{name} {n}" for name, n in sorted(cases.items()))
        terminalreporter.write_line(f"property-based test cases: {sum(cases.values())} ({detail})")
    pools, files, problems = _input_guard.changed()
    if problems:
        terminalreporter.write_line(f"INPUTS CHANGED: {len(problems)} of {pools} test pools", red=True)
        for line in problems:
            terminalreporter.write_line(f"  {line}", red=True)
    elif pools:
        terminalreporter.write_line(f"input pools unchanged over the session: {pools} pools, {files} files, "
                                    "sha256 of every file as built")


def pytest_sessionfinish(session, exitstatus):
    if _input_guard.changed()[2] and session.exitstatus == 0:
        session.exitstatus = 1
