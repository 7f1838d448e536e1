"""The operator's guide lists every setting: each environment variable config/settings.py reads is in the guide's
"Every setting" table, and the table names nothing settings.py does not read; the variables of the second table
(make run, tests, CI) are still used somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "config" / "settings.py"
GUIDE = ROOT / "docs" / "guide" / "operator.md"

#: env.str("X"…), env.int(…), env.list, env.dict, env.float, env.db_url, env.cache_url, env("X"), env_flag("X"…).
ENV_READ = re.compile(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']|\benv_flag\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
#: Variables read by prefix: name.startswith("ANYMAIL_").
PREFIX_READ = re.compile(r"\.startswith\(\s*[\"']([A-Z][A-Z0-9_]*_)[\"']")
#: Any other way of reading the environment, which the two patterns above would miss.
OTHER_READ = re.compile(r"os\.environ|os\.getenv|getenv\(|env\.ENVIRON\[")


def settings_reads(source: str) -> set[str]:
    names = {a or b for a, b in ENV_READ.findall(source)}
    return names | {f"{prefix}<NAME>" for prefix in PREFIX_READ.findall(source)}


def table_names(markdown: str, heading: str) -> list[set[str]]:
    """The backticked names in the first column of each table under ``heading`` (until the next heading)."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("| variable |"):
            current = set()
            tables.append(current)
        elif line.startswith("|") and current is not None and not line.startswith("|---"):
            current.update(re.findall(r"`([A-Z][A-Z0-9_]*(?:<NAME>)?)`", line.split("|")[1]))
        elif not line.startswith("|"):
            current = None
    return tables


def test_the_patterns_find_every_kind_of_read():
    source = """
X = env.str("A_STR", default="")
Y = env.int(
    "B_INT", default=1)
Z = env_flag("C_FLAG", default=False)
W = env.db_url("D_URL", default="sqlite://")
V = env("E_PLAIN")
if name.startswith("PREFIX_"):
    pass
"""
    assert settings_reads(source) == {"A_STR", "B_INT", "C_FLAG", "D_URL", "E_PLAIN", "PREFIX_<NAME>"}


def test_every_variable_read_by_settings_is_in_the_guide_and_nothing_else():
    source = SETTINGS.read_text(encoding="utf-8")
    reads = settings_reads(source)
    assert len(reads) > 50  # the patterns still match how settings.py reads
    # settings.py reads the environment only through environ.Env and env_flag, which the patterns see.
    assert OTHER_READ.findall(source.replace("dict(env.ENVIRON)", "")) == []

    settings_table, _other = table_names(GUIDE.read_text(encoding="utf-8"), "Every setting")
    missing = sorted(reads - settings_table)
    assert not missing, f"add these variables read by config/settings.py to docs/guide/operator.md: {missing}"
    stale = sorted(settings_table - reads)
    assert not stale, f"docs/guide/operator.md lists variables config/settings.py does not read: {stale}"


def test_the_other_variables_are_still_used():
    _settings, other = table_names(GUIDE.read_text(encoding="utf-8"), "Every setting")
    assert "LOOP_WEB_PORT" in other
    apps = ("config", "crm", "campaigns", "journeys", "bench")
    files = [*ROOT.glob("*.py"), *(path for app in apps for path in (ROOT / app).rglob("*.py"))]
    files += [ROOT / "Makefile", ROOT / "Procfile.dev", ROOT / ".ci" / "run"]
    code = "\n".join(path.read_text(encoding="utf-8") for path in files if path.is_file() and path != Path(__file__))
    unused = sorted(name for name in other if name not in code)
    assert not unused, f"docs/guide/operator.md lists variables nothing reads any more: {unused}"
