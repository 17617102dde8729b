# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""scripts/role-docs.py: the role READMEs' variable tables match meta/argument_specs.yml.

The script is loaded as a module and its ``main()`` called in this process (no subprocess): first
against this checkout's roles (``--check``: the test that fails when a role's inputs change and its
README does not follow), then against roles written in ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "role-docs.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("akig_role_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass needs the module registered
    spec.loader.exec_module(module)
    return module


rd = load_script()

SPECS: dict[str, Any] = {
    "argument_specs": {
        "main": {
            "short_description": "Restart the thing",
            "options": {
                "demo_names": {"type": "list", "elements": "str", "description": "Names, for example C([a, b])."},
                "demo_mode": {"type": "str", "choices": ["fast", "slow"], "default": "fast",
                              "description": ["Mode of the restart.", "I(slow) waits; B(fast) does not."]},
                "demo_url": {"type": "str", "required": True, "description": "URL; C(a|b) is escaped."},
                "demo_timeout_s": {"type": "int", "description": "Seconds (O(demo_mode) does not matter)."},
            },
        },
        "verify": {
            "short_description": "Check the thing",
            "options": {"demo_timeout_s": {"type": "int", "description": "Seconds per check."}},
        },
    }
}
DEFAULTS = {"demo_names": ["akig-backend"], "demo_mode": "slow", "demo_timeout_s": 30}
README = textwrap.dedent("""\
    # demo

    Intro text that the script must not touch.

    ## Variables

    {begin}
    {end}

    ## Rollback

    Nothing to roll back.
    """).format(begin=rd.BEGIN, end=rd.END)


def make_role(root: Path, specs: Any = None, defaults: Any = None, readme: str | None = README, name: str = "demo") -> Path:
    role = root / "roles" / name
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(SPECS if specs is None else specs, sort_keys=False))
    (role / "defaults" / "main.yml").write_text(yaml.safe_dump(DEFAULTS if defaults is None else defaults))
    if readme is not None:
        (role / "README.md").write_text(readme)
    return role


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = rd.main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def generated_block(tmp_path: Path, capsys: pytest.CaptureFixture[str], options: dict[str, Any],
                    defaults: dict[str, Any]) -> list[str]:
    """The lines the script writes between the markers for a role with one entry point, main."""
    role = make_role(tmp_path, specs={"argument_specs": {"main": {"options": options}}}, defaults=defaults)
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 0
    return (role / "README.md").read_text().split(rd.BEGIN)[1].split(rd.END)[0].splitlines()


# -- this checkout ---------------------------------------------------------------------------


def test_every_role_readme_matches_its_argument_spec(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--check")
    assert status == 0, "README variable tables differ from meta/argument_specs.yml " \
                        "(run .venv/bin/python scripts/role-docs.py):\n" + out + err


def test_every_role_has_the_markers() -> None:
    roles = [path.parent.parent for path in (REPO / "roles").glob("*/meta/argument_specs.yml")]
    assert roles
    for role in roles:
        text = (role / "README.md").read_text(encoding="utf-8")
        assert text.count(rd.BEGIN) == 1 and text.count(rd.END) == 1, role.name


# -- rendering -------------------------------------------------------------------------------


def test_rewrite_fills_the_block_and_leaves_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = make_role(tmp_path)
    status, out, _err = run(capsys, "--roles-dir", str(tmp_path / "roles"))
    assert status == 0 and out.strip() == "updated roles/demo/README.md"
    text = (role / "README.md").read_text()
    before, block_and_after = text.split(rd.BEGIN)
    assert before == README.split(rd.BEGIN)[0]
    assert block_and_after.split(rd.END)[1] == README.split(rd.END)[1]
    assert "### Entry point `main`: Restart the thing" in text and "### Entry point `verify`: Check the thing" in text
    lines = text.splitlines()
    assert "| `demo_names` | list of str | `[akig-backend]` | no | Names, for example `[a, b]`. |" in lines
    # the spec's default wins over defaults/main.yml; choices go with the type; list descriptions are joined
    assert "| `demo_mode` | str (`fast`, `slow`) | `fast` | no | Mode of the restart. *slow* waits; **fast** does not. |" in lines
    # required without a default: an empty default cell; a pipe is escaped
    assert "| `demo_url` | str |  | yes | URL; `a\\|b` is escaped. |" in lines
    # no spec default: defaults/main.yml's
    assert "| `demo_timeout_s` | int | `30` | no | Seconds (`demo_mode` does not matter). |" in lines
    assert "| `demo_timeout_s` | int | `30` | no | Seconds per check. |" in lines


def test_second_run_changes_nothing_and_check_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = make_role(tmp_path)
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 0
    first = (role / "README.md").read_bytes()
    status, out, err = run(capsys, "--roles-dir", str(tmp_path / "roles"))
    assert (status, out, err) == (0, "", "")
    assert (role / "README.md").read_bytes() == first
    status, out, err = run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))
    assert (status, out) == (0, "") and all(line.startswith("note: ") for line in err.splitlines())


def test_single_entry_point_has_no_heading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = generated_block(tmp_path, capsys, {"demo_x": {"type": "bool", "default": False, "description": "X."}}, {})
    assert not [line for line in lines if line.startswith("#")] and "| `demo_x` | bool | `false` | no | X. |" in lines


def test_long_and_empty_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {
        "demo_tiers": {"type": "dict", "description": "Tiers."},
        "demo_empty": {"type": "str", "default": "", "description": "Empty."},
        "demo_none": {"type": "raw", "description": "None."},
        "demo_none_default": {"type": "int", "default": None, "description": "Null."}}
    lines = generated_block(tmp_path, capsys, options, {"demo_tiers": {"tier%d" % n: ["a" * 10] for n in range(9)}})
    assert "| `demo_tiers` | dict | see `defaults/main.yml` | no | Tiers. |" in lines
    assert '| `demo_empty` | str | `""` | no | Empty. |' in lines
    assert "| `demo_none` | raw |  | no | None. |" in lines
    assert "| `demo_none_default` | int | `null` | no | Null. |" in lines


# -- drift -----------------------------------------------------------------------------------


def test_check_names_each_drifted_variable_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = make_role(tmp_path)
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 0
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    main = specs["argument_specs"]["main"]["options"]
    main["demo_mode"]["default"] = "slow"                       # a changed default
    main["demo_new"] = {"type": "int", "description": "New."}   # a new input
    del main["demo_names"]                                       # a removed input
    (role / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(specs, sort_keys=False))
    before = (role / "README.md").read_bytes()
    status, out, err = run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))
    assert status == 1 and out == ""
    assert "roles/demo/README.md: entry point main: `demo_mode`: default is '`fast`' in the README, '`slow`' in the argument spec" in err
    assert "roles/demo/README.md: entry point main: `demo_new` is an input but not in the table" in err
    assert "roles/demo/README.md: entry point main: `demo_names` is in the table but is not an input of this entry point" in err
    assert "run .venv/bin/python scripts/role-docs.py" in err
    assert (role / "README.md").read_bytes() == before
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 0
    assert run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))[0] == 0


def test_readme_without_markers_is_checked_against_its_own_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = textwrap.dedent("""\
        # demo

        | name | type | default | required | description |
        |---|---|---|---|---|
        | `demo_names` | list | `[akig-backend]` | no | names |
        | `demo_mode` | str | `slow` | no | mode |
        | `demo_url` | int | `akig_url` + `/x` | yes | url |
        | `demo_gone` | str | `""` | no | an input that was removed |
        """)
    role = make_role(tmp_path, readme=readme)
    status, _out, err = run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))
    assert status == 1
    problems = sorted(line for line in err.splitlines() if line.startswith("roles/demo/README.md: `"))
    assert problems == sorted([
        "roles/demo/README.md: `demo_mode`: default is `slow` in the README, `fast` in the argument spec/defaults",
        "roles/demo/README.md: `demo_url`: type is 'int' in the README, 'str' in the argument spec",
        "roles/demo/README.md: `demo_timeout_s` is an input but not in the README's variable table",
        "roles/demo/README.md: `demo_gone` is in the README's variable table but is not an input of any entry point",
    ])
    assert "roles/demo/README.md has no %s / %s markers" % (rd.BEGIN, rd.END) in err
    # rewriting does not guess where the table goes: the README is left alone and the run fails
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 1
    assert (role / "README.md").read_text() == readme


@pytest.mark.parametrize("readme, needle", [
    (README.replace(rd.END, rd.BEGIN), "must hold %s once, then %s once" % (rd.BEGIN, rd.END)),
    (README.replace(rd.BEGIN, "x").replace(rd.END, rd.BEGIN).replace("x", rd.END, 1), "fix the markers"),
])
def test_broken_markers_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], readme: str, needle: str) -> None:
    role = make_role(tmp_path, readme=readme)
    status, _out, err = run(capsys, "--roles-dir", str(tmp_path / "roles"))
    assert status == 2 and needle in err
    assert (role / "README.md").read_text() == readme


def test_unreadable_spec_and_missing_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = make_role(tmp_path, name="bad")
    (bad / "meta" / "argument_specs.yml").write_text("argument_specs: [unclosed\n")
    make_role(tmp_path, name="noreadme", readme=None)
    status, _out, err = run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))
    assert status == 2
    assert "argument_specs.yml is not valid YAML" in err and "bad" in err
    assert "roles/noreadme/README.md is missing" in err
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"), "nosuchrole")[0] == 2


def test_conflicting_defaults_are_noted_without_failing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_role(tmp_path)  # demo_mode: spec fast, defaults/main.yml slow
    assert run(capsys, "--roles-dir", str(tmp_path / "roles"))[0] == 0
    status, _out, err = run(capsys, "--check", "--roles-dir", str(tmp_path / "roles"))
    assert status == 0
    assert "note: roles/demo: `demo_mode`: the argument spec's default is `fast`, defaults/main.yml's `slow`" in err


# -- the parser reads back what the renderer writes ------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
OPTION = st.fixed_dictionaries(
    {"type": st.sampled_from(["str", "int", "bool", "list", "dict", "raw", "path", "float"]),
     "description": TEXT},
    optional={"default": st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.lists(TEXT, max_size=3)),
              "required": st.booleans(), "choices": st.lists(st.text("abc|`", min_size=1, max_size=4), min_size=1,
                                                             max_size=3, unique=True)})
OPTIONS = st.dictionaries(st.from_regex(r"demo_[a-z][a-z0-9_]{0,12}", fullmatch=True), OPTION, min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(entries=st.dictionaries(st.sampled_from(["main", "verify", "rejoin"]), OPTIONS, min_size=1, max_size=3))
def test_rendered_tables_read_back_without_drift(tmp_path_factory: pytest.TempPathFactory, entries: dict[str, Any]) -> None:
    root = tmp_path_factory.mktemp("prop")
    specs = {"argument_specs": {name: {"short_description": "Entry %s" % name, "options": options}
                                for name, options in entries.items()}}
    role = make_role(root, specs=specs, defaults={})
    readme = role / "README.md"
    readme.write_text(README.replace(rd.BEGIN + "\n" + rd.END, rd.render(role)))
    assert rd.strict_drift(role, readme.read_text()) == []
    assert rd.process(role, check=True) == (True, [])
