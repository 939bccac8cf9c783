"""Faults a hostile probe found: each is made to happen for real through the `bench` command."""

from __future__ import annotations

import pytest

from bench.suite import MAX_SUITE_BYTES

pytestmark = pytest.mark.slow  # each starts the CLI (torch imports: seconds)


def test_a_deeply_nested_suite_is_refused_with_its_file_and_line(run_cli, write_suite, tmp_path):
    # 1 KB, 500 levels deep: PyYAML's composer recursed until RecursionError ("internal error", exit 1).
    nested = "name: deep\nmatrix:\n  model: [tiny_mlp]\nextra: " + "[" * 500 + "]" * 500 + "\n"
    suite = write_suite(nested, name="deep.yaml")
    for command in ("validate", "run"):
        result = run_cli(command, str(suite))
        assert result.returncode == 2, result.stderr
        assert f"{suite}, line 4: nests mappings and lists more than" in result.stderr
        assert "RecursionError" not in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "reports").exists()


def test_a_suite_file_over_the_size_cap_is_refused(run_cli, write_suite):
    suite = write_suite("name: big\nmatrix:\n  model: [tiny_mlp]\n" + "# padding\n" * (MAX_SUITE_BYTES // 10))
    result = run_cli("validate", str(suite))
    assert result.returncode == 2
    assert f"{suite}: is larger than 1 MiB" in result.stderr


@pytest.mark.parametrize("location", ["postgresql://bench@db.example/bench", "sqlite:///tmp/h.sqlite", ""])
def test_a_history_location_that_is_not_a_file_path_is_refused(run_cli, write_suite, tmp_path, location):
    suite = write_suite("name: h\nmatrix:\n  model: [tiny_mlp]\n")
    for args in (("run", str(suite), "--history", location), ("history", "--history", location)):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "argument --history" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite.yaml"]  # no 'postgresql:' folder, no run


def test_validate_lists_the_code_a_suites_factories_import_and_run(run_cli, write_suite, tmp_path):
    (tmp_path / "my_factories.py").write_text(
        "import torch\n\ndef mlp():\n    return torch.nn.Linear(4, 2)\n", encoding="utf-8"
    )
    suite = write_suite(
        """
        name: code
        matrix:
          model:
            - tiny_mlp
            - {name: mine, factory: "my_factories:mlp", input_shape: [4]}
            - {name: shell, factory: "os:system", input_shape: [4]}
        """
    )
    result = run_cli("validate", str(suite))
    assert result.returncode == 0, result.stderr
    assert "runs Python code" in result.stdout
    assert f"my_factories:mlp  ({tmp_path / 'my_factories.py'})" in result.stdout
    assert "os:system  (" in result.stdout
