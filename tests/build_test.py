"""Checks that the top-level BUILD file covers the repo's Python files.

BUILD is Starlark, which Python's `ast` parses, so this plain pytest test reads
it, evaluates `glob(...)` itself and asserts that every .py file under
tfp_glow/, bin/, tests/ and tools/ is in some target's srcs, every
tests/*_test.py has a py_test, every bin/*.py has a py_binary, and every local
label refers to a target or file that exists. On failure, run
`python tools/gen_build.py` (or edit BUILD by hand).

Under Bazel it follows its own symlink back to the source tree, so it checks
the real checkout, not just the files declared to Bazel.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED_DIRS = ("tfp_glow", "bin", "tests", "tools")
BUILD_NAMES = ("BUILD", "BUILD.bazel")
RULE_KINDS = ("py_library", "py_binary", "py_test", "filegroup")


def _skip(path):
    parts = path.relative_to(ROOT).parts
    return "__pycache__" in parts or any(p.startswith(".") for p in parts)


def _glob(patterns, exclude=()):
    """Bazel's glob over ROOT (files only, `**` is zero or more folders)."""
    found = set()
    for pattern in patterns:
        for path in ROOT.glob(pattern):
            if path.is_file() and not _skip(path):
                found.add(path.relative_to(ROOT).as_posix())
    for pattern in exclude:
        for path in ROOT.glob(pattern):
            found.discard(path.relative_to(ROOT).as_posix())
    return found


def _eval(node):
    """Evaluates the small Starlark subset BUILD uses: strings, lists, +, glob()."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [_eval(e) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval(node.left) + _eval(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "glob":
            kwargs = {k.arg: _eval(k.value) for k in node.keywords}
            include = _eval(node.args[0]) if node.args else kwargs.get("include", [])
            return sorted(_glob(include, kwargs.get("exclude", [])))
    raise AssertionError("BUILD: cannot evaluate %s" % ast.dump(node))


def _targets():
    """Maps target name -> (rule kind, {attribute: value}) for every rule in BUILD."""
    tree = ast.parse((ROOT / "BUILD").read_text(), filename="BUILD")
    targets = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
            continue
        call = stmt.value
        kind = getattr(call.func, "id", None)
        if kind not in RULE_KINDS:
            continue
        attrs = {k.arg: _eval(k.value) for k in call.keywords}
        name = attrs["name"]
        assert name not in targets, "BUILD: target %r defined twice" % name
        targets[name] = (kind, attrs)
    return targets


@pytest.fixture(scope="module", name="targets")
def _targets_fixture():
    return _targets()


def _srcs(targets, kinds=RULE_KINDS):
    covered = set()
    for kind, attrs in targets.values():
        if kind in kinds:
            covered.update(attrs.get("srcs", []))
    return covered


def _python_files(dirs=CHECKED_DIRS):
    files = set()
    for top in dirs:
        files |= _glob([top + "/**/*.py"])
    return files


def test_build_parses_and_has_targets(targets):
    assert targets, "BUILD defines no targets"
    assert targets["tfp_glow"][0] == "py_library"


def test_single_build_file():
    # Globs in BUILD stop at package boundaries; one BUILD file keeps them whole.
    extra = [
        p.relative_to(ROOT).as_posix()
        for top in CHECKED_DIRS
        for name in BUILD_NAMES
        for p in ROOT.glob(top + "/**/" + name)
        if not _skip(p)
    ]
    assert not extra, "per-directory BUILD files break the top-level globs: %s" % extra


def test_every_python_file_is_in_some_target(targets):
    missing = sorted(_python_files() - _srcs(targets))
    assert not missing, (
        "Python files in no BUILD target (run `python tools/gen_build.py`): %s" % missing)


def test_every_test_file_has_a_py_test(targets):
    tested = set()
    for kind, attrs in targets.values():
        if kind == "py_test":
            tested.update(s for s in attrs.get("srcs", []) if s.endswith("_test.py"))
    missing = sorted(_glob(["tests/*_test.py"]) - tested)
    assert not missing, "tests/*_test.py without a py_test: %s" % missing


def test_every_test_file_is_run_by_its_py_test(targets):
    for name, (kind, attrs) in targets.items():
        if kind != "py_test":
            continue
        tests = [s for s in attrs.get("srcs", []) if s.endswith("_test.py")]
        args = " ".join(attrs.get("args", []))
        for test in tests:
            assert test in args or attrs.get("main") == test, (
                "py_test %r has %s in srcs but does not run it" % (name, test))


def test_every_bin_file_has_a_py_binary(targets):
    missing = sorted(_glob(["bin/*.py"]) - _srcs(targets, ("py_binary",)))
    assert not missing, "bin/*.py without a py_binary: %s" % missing


def test_mains_are_in_srcs(targets):
    for name, (kind, attrs) in targets.items():
        if kind in ("py_binary", "py_test") and "main" in attrs:
            assert attrs["main"] in attrs.get("srcs", []), (
                "%s %r: main %s is not in srcs" % (kind, name, attrs["main"]))


def test_labels_refer_to_existing_targets_or_files(targets):
    for name, (_, attrs) in targets.items():
        for attr in ("srcs", "deps", "data"):
            for label in attrs.get(attr, []):
                if label.startswith("@"):
                    continue
                if label.startswith("//:"):
                    label = label[2:]
                if label.startswith(":"):
                    assert label[1:] in targets, (
                        "%r: %s label %s names no target" % (name, attr, label))
                else:
                    assert not label.startswith("//"), (
                        "%r: label %s: there is only the top-level package" % (name, label))
                    assert label in targets or (ROOT / label).is_file(), (
                        "%r: %s entry %s does not exist" % (name, attr, label))
