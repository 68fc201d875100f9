"""checks — the counting check of the Python tests (the counterpart of tests/check.h for C).

    from checks import check, finish
    check(cond, "what was expected")   # counts; on failure prints "FAIL: ..." and goes on
    finish("test_name")                # prints "test_name: P passed, F failed" and exits 1 if any failed
"""
import sys

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def finish(name):
    print(f"{name}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
