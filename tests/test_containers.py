"""The container files hold: each Dockerfile starts from a base pinned by tag, runs the README's
install commands (the runtime lock, then the project with --no-deps) and the README's demo as a
non-root user, and copies only files that exist and that .dockerignore lets through; the CUDA file
adds JAX's CUDA plugin at the lock's jax version.

The files are read with a small parser of the Dockerfile grammar (instructions, comments, line
continuations, JSON-form arguments, ARG defaults in FROM) and .dockerignore with Docker's matching
rules (Go path patterns, ``**``, ``!`` exceptions, a parent's match covering its children). Nothing
is built here: CI has no container engine (docs/development.md#containers)."""

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "Dockerfile", "cuda": ROOT / "Dockerfile.cuda"}

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


# --- a small Dockerfile parser -------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the arguments as written, continuations joined
    line: int  # where the instruction starts (1-based)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (``CMD ["a", "b"]``), None for shell form."""
        if not self.args.startswith("["):
            return None
        try:
            value = json.loads(self.args)
        except json.JSONDecodeError:
            return None  # Docker runs a malformed array as a shell command
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_dockerfile(text: str, name: str = "Dockerfile") -> list[Instruction]:
    """The instructions of a Dockerfile with the default escape character ``\\``.

    A line ending in ``\\`` continues on the next; comment lines and blank lines inside a
    continuation are skipped, as Docker does. Raises ValueError naming the file and line of an
    unknown instruction or of a continuation that never ends."""
    if re.match(r"#\s*escape\s*=", text):
        raise NotImplementedError(f"{name}: the escape parser directive is not supported here")
    out: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        continued = stripped.endswith("\\")
        parts.append(stripped[:-1].strip() if continued else stripped)
        if continued:
            continue
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise ValueError(f"{name}:{start}: unknown instruction {keyword!r}")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    if parts:
        raise ValueError(f"{name}:{start}: the line continuation never ends")
    return out


def _substitute(value: str, variables: dict[str, str]) -> str:
    """``$NAME``, ``${NAME}`` and ``${NAME:-default}`` replaced from ``variables``."""
    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        if name in variables:
            return variables[name]
        return match.group(2) if match.group(2) is not None else ""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", replace, value)


def base_image(instructions: list[Instruction]) -> str:
    """The image of the first FROM, with the ARG defaults declared before it substituted."""
    variables: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            variables[name.strip()] = default.strip().strip('"')
        elif ins.keyword == "FROM":
            return _substitute(ins.args.split()[0], variables)
    raise ValueError("no FROM instruction")


def _flags_and_words(args: str) -> tuple[dict[str, str], list[str]]:
    """``--chown=a --from=b src dest`` -> ({"chown": "a", "from": "b"}, ["src", "dest"])."""
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words


def _key_values(args: str) -> dict[str, str]:
    """The pairs of ``ENV``/``LABEL`` in ``key=value`` form (quotes and continuations removed)."""
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, found {word!r}")
        pairs[key] = value
    return pairs


def _shell_commands(args: str) -> list[list[str]]:
    """The simple commands of a shell-form RUN, split at ``&&``, ``||`` and ``;``."""
    commands, current = [], []
    lexer = shlex.shlex(args, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    for token in lexer:
        if token in {"&&", "||", ";"}:
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in commands + [current] if c]


@dataclass(frozen=True)
class PipInstall:
    args: list[str]  # what follows `pip install`
    workdir: str  # the WORKDIR it ran in
    copied: frozenset[str]  # absolute paths COPY had written before it ran


def pip_installs(instructions: list[Instruction]) -> list[PipInstall]:
    """Every ``pip install`` of the RUN instructions, in order, with the working folder and the
    files copied into the image before it (COPY's destination rules: into a folder when the
    destination ends in ``/`` or there are several sources)."""
    workdir, copied, out = "/", set(), []
    for ins in instructions:
        if ins.keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, ins.args))
        elif ins.keyword == "COPY":
            flags, words = _flags_and_words(ins.args)
            if "from" in flags:
                continue
            *sources, dest = words
            into = dest.endswith("/") or dest in {".", "./"} or len(sources) > 1
            target = PurePosixPath(workdir, dest)
            for source in sources:
                copied.add(str(target / PurePosixPath(source).name) if into else str(target))
        elif ins.keyword == "RUN":
            for argv in _shell_commands(ins.args):
                if len(argv) >= 2 and PurePosixPath(argv[0]).name in {"pip", "pip3"} and argv[1] == "install":
                    out.append(PipInstall(argv[2:], workdir, frozenset(copied)))
    return out


def _dockerfile(kind: str) -> list[Instruction]:
    path = DOCKERFILES[kind]
    return parse_dockerfile(path.read_text(), path.name)


# --- .dockerignore, with Docker's matching rules -------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's translation of a path pattern: ``*`` and ``?`` stop at ``/``, ``**`` crosses
    folders (``**/`` also matches no folder at all), ``[...]`` is a class, ``\\`` escapes."""
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 == len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def read_dockerignore(text: str) -> list[tuple[bool, re.Pattern]]:
    """(is an exception, regex) for each rule: ``#`` comments and blank lines skipped, the path
    cleaned (``./a//b/`` -> ``a/b``), a leading ``/`` dropped."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        cleaned = "/".join(part for part in line.split("/") if part not in {"", "."}) or "."
        rules.append((exception, _pattern_regex(cleaned)))
    return rules


def is_excluded(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: a pattern that matches the path or one of its parent folders decides, and the
    last one that matches wins."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules:
        if any(regex.match(c) for c in candidates):
            excluded = not exception
    return excluded


def _dockerignore() -> list[tuple[bool, re.Pattern]]:
    return read_dockerignore((ROOT / ".dockerignore").read_text())


# --- what the README says ------------------------------------------------------------------------

def _quick_start_commands() -> list[list[str]]:
    """The commands of the bash blocks of the README's "## Quick start" section, comments dropped
    and ``a && b`` split in two."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL):
        for line in block.splitlines():
            commands += _shell_commands(line.split("#", 1)[0])
    return commands


def readme_install() -> list[list[str]]:
    """What follows ``pip install`` in the README's install of the runtime lock and the project
    (the commands of the line that installs requirements.lock)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#", 1)[0] for line in section.splitlines()]
    line = next(line for line in lines if "requirements.lock" in shlex.split(line))
    return [argv[2:] for argv in _shell_commands(line) if PurePosixPath(argv[0]).name == "pip"]


def readme_demo() -> list[str]:
    """The README's quick-start demo command, the virtualenv's folder dropped (``chaosfm ...``)."""
    argv = next(a for a in _quick_start_commands() if PurePosixPath(a[0]).name == "chaosfm" and a[1] == "demo")
    return [PurePosixPath(argv[0]).name, *argv[1:]]


def _locked_version(name: str) -> str:
    text = (ROOT / "requirements.lock").read_text()
    found = re.findall(rf"^{re.escape(name)}==(\S+)$", text, flags=re.MULTILINE)
    assert len(found) == 1, f"requirements.lock: expected one pin of {name}, found {found}"
    return found[0]


# --- the parser and the matcher themselves -------------------------------------------------------

def test_the_parser_joins_continuations_skips_comments_and_reads_json_arrays():
    text = (
        "# a comment\n"
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS build\n"
        "RUN apt-get update \\\n"
        "# a comment inside the continuation\n"
        "\n"
        "    && pip install -r requirements.lock\n"
        "copy --chown=1000 a b /dst/\n"
        'CMD ["chaosfm", "demo"]\n'
        "CMD chaosfm demo\n"
    )
    instructions = parse_dockerfile(text)
    assert [i.keyword for i in instructions] == ["ARG", "FROM", "RUN", "COPY", "CMD", "CMD"]
    assert instructions[2].args == "apt-get update && pip install -r requirements.lock"
    assert instructions[2].line == 4 and instructions[3].line == 8
    assert instructions[4].exec_form == ["chaosfm", "demo"]
    assert instructions[5].exec_form is None
    assert base_image(instructions) == "python:3.11-slim"
    assert _flags_and_words(instructions[3].args) == ({"chown": "1000"}, ["a", "b", "/dst/"])
    assert _shell_commands(instructions[2].args) == [["apt-get", "update"], ["pip", "install", "-r", "requirements.lock"]]
    with pytest.raises(ValueError, match="Dockerfile:1: unknown instruction 'FORM'"):
        parse_dockerfile("FORM python:3.11\n")
    with pytest.raises(ValueError, match="never ends"):
        parse_dockerfile("FROM python:3.11\nRUN true \\\n")


def test_the_copy_tracking_follows_workdir_and_folder_destinations():
    instructions = parse_dockerfile(
        "FROM x\nWORKDIR /opt/app\nCOPY a.lock ./\nRUN pip install -r a.lock\n"
        "COPY src ./src\nCOPY p q /etc/\nRUN pip install --no-deps -e .\n")
    first, second = pip_installs(instructions)
    assert first.workdir == "/opt/app" and first.copied == {"/opt/app/a.lock"}
    assert second.copied == {"/opt/app/a.lock", "/opt/app/src", "/etc/p", "/etc/q"}


@pytest.mark.parametrize(("rules", "path", "excluded"), [
    # The examples of Docker's .dockerignore documentation (build context page).
    ("*/temp*", "somedir/temporary.txt", True),
    ("*/temp*", "somedir/temp", True),
    ("*/temp*", "temporary.txt", False),
    ("*/temp*", "somedir/subdir/temporary.txt", False),
    ("*/*/temp*", "somedir/subdir/temporary.txt", True),
    ("temp?", "tempa", True),
    ("temp?", "tempab", False),
    ("**/*.go", "a/b/c/main.go", True),
    ("**/*.go", "main.go", True),
    ("*.md\n!README*.md\nREADME-secret.md", "README.md", False),
    ("*.md\n!README*.md\nREADME-secret.md", "README-secret.md", True),
    ("*.md\n!README*.md\nREADME-secret.md", "CHANGES.md", True),
    ("*.md\nREADME-secret.md\n!README*.md", "README-secret.md", False),
    # A folder's match covers everything in it; `/` and `./` prefixes are cleaned away.
    ("/runs/", "runs/demo-1/metrics.json", True),
    ("./.venv", ".venv/bin/python", True),
    ("**/__pycache__", "src/chaosfm/__pycache__/cli.cpython-311.pyc", True),
    ("**/__pycache__", "src/chaosfm/cli.py", False),
    ("src/**/*.py[cod]", "src/a/b.pyc", True),
    ("src/**/*.py[cod]", "src/a/b.py", False),
])
def test_the_dockerignore_matcher_follows_dockers_rules(rules, path, excluded):
    assert is_excluded(path, read_dockerignore(rules)) is excluded


# --- the repository's files ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", DOCKERFILES)
def test_the_dockerfile_parses_and_runs_the_readme_demo_as_a_user(kind):
    instructions = _dockerfile(kind)
    keywords = [i.keyword for i in instructions]
    assert keywords.count("FROM") == 1 and keywords.count("CMD") == 1, keywords
    cmd = next(i for i in instructions if i.keyword == "CMD")
    assert cmd.exec_form == readme_demo() == ["chaosfm", "demo", "--fast"]
    users = [i for i in instructions if i.keyword == "USER"]
    assert users, f"{DOCKERFILES[kind].name}: no USER, so the image runs as root"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}, f"{DOCKERFILES[kind].name}:{users[-1].line}: USER {user}"
    assert users[-1].line < cmd.line
    creates = [a for i in instructions if i.keyword == "RUN" for a in _shell_commands(i.args) if a[0] == "useradd"]
    assert any(a[-1] == user for a in creates), f"USER {user} is not created by a useradd"
    # The default output folder (runs/ under the last WORKDIR) is made and handed to the user.
    workdir = [i.args for i in instructions if i.keyword == "WORKDIR"][-1]
    runs = str(PurePosixPath(workdir, "runs"))
    commands = [a for i in instructions if i.keyword == "RUN" for a in _shell_commands(i.args)]
    assert any(a[:2] == ["mkdir", "-p"] and runs in a for a in commands)
    assert any(a[0] == "chown" and a[1].split(":")[0] == user and runs in a for a in commands)


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_the_base_image_is_pinned_by_tag(kind):
    image = base_image(_dockerfile(kind))
    name, _, tag = image.partition("@")[0].rpartition(":")
    assert name and tag and tag != "latest", f"{DOCKERFILES[kind].name}: base {image!r} is not pinned by a tag"
    if kind == "cpu":
        requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
        assert name == "python" and tag.startswith(requires.removeprefix(">=") + "-"), (image, requires)
    else:
        assert name == "nvidia/cuda" and re.fullmatch(r"12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", tag), image


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_the_install_is_the_readmes_from_the_lock(kind):
    installs = pip_installs(_dockerfile(kind))
    assert all("--no-cache-dir" in p.args for p in installs), [p.args for p in installs]
    args = [[a for a in p.args if a != "--no-cache-dir"] for p in installs]
    readme = readme_install()
    assert readme == [["-r", "requirements.lock"], ["--no-deps", "-e", "."]]
    # The README's two commands, in its order; the CUDA file adds only exact pins between them.
    assert [a for a in args if a in readme] == readme
    for a in args:
        if a not in readme:
            assert kind == "cuda" and a[0] == "--no-deps" and all("==" in w for w in a[1:]), a
    lock = next(p for p in installs if "requirements.lock" in p.args)
    project = next(p for p in installs if "-e" in p.args)
    assert str(PurePosixPath(lock.workdir, "requirements.lock")) in lock.copied
    for needed in ("pyproject.toml", "README.md", "src"):
        assert str(PurePosixPath(project.workdir, needed)) in project.copied, needed


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_the_labels_name_the_licence_and_version(kind):
    labels = {}
    for ins in _dockerfile(kind):
        if ins.keyword == "LABEL":
            labels.update(_key_values(ins.args))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]["text"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == project["version"]


def test_jax_runs_on_the_cpu_in_the_cpu_image_only():
    def env(kind):
        out = {}
        for ins in _dockerfile(kind):
            if ins.keyword == "ENV":
                out.update(_key_values(ins.args))
        return out
    assert env("cpu")["JAX_PLATFORMS"] == "cpu"
    assert "cpu" not in env("cuda").get("JAX_PLATFORMS", "cuda")


def test_the_cuda_image_adds_the_plugin_at_the_locks_jax_version():
    jax = _locked_version("jax")
    assert _locked_version("jaxlib") == jax
    pins = {w.partition("==")[0]: w.partition("==")[2] for p in pip_installs(_dockerfile("cuda")) for w in p.args if "==" in w}
    assert pins["jax-cuda12-plugin"] == jax and pins["jax-cuda12-pjrt"] == jax, pins
    # The CUDA components from wheels match the base image's CUDA 12.x.
    cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.", base_image(_dockerfile("cuda"))).group(1)
    for name in ("nvidia-cuda-cupti-cu12", "nvidia-cuda-nvcc-cu12"):
        assert pins[name].startswith(cuda + "."), (name, pins[name], cuda)
    apt = [a for i in _dockerfile("cuda") if i.keyword == "RUN" for a in _shell_commands(i.args) if a[:2] == ["apt-get", "install"]]
    assert any("python3.11" in a and "python3.11-venv" in a for a in apt)


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_every_copy_source_exists_and_is_in_the_build_context(kind):
    rules = _dockerignore()
    for ins in _dockerfile(kind):
        if ins.keyword not in {"COPY", "ADD"}:
            continue
        flags, words = _flags_and_words(ins.args)
        assert "from" not in flags or ins.keyword == "COPY"
        for source in words[:-1]:
            where = f"{DOCKERFILES[kind].name}:{ins.line}: {source}"
            path = ROOT / source
            assert path.exists(), f"{where} does not exist"
            assert not is_excluded(source, rules), f"{where} is excluded by .dockerignore"
            if path.is_dir():
                files = [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
                assert files, f"{where} is empty"
                dropped = [str(f.relative_to(ROOT)) for f in files if is_excluded(str(f.relative_to(ROOT)), rules)]
                assert dropped == [], f"{where}: .dockerignore drops {dropped[:5]}"


def test_the_dockerignore_keeps_environments_runs_and_caches_out():
    rules = _dockerignore()
    for path in [".venv/bin/python", "runs/demo-20261203-120000/metrics.json", ".git/HEAD",
                 "src/chaosfm/__pycache__/cli.cpython-311.pyc", "tests/__pycache__/x.pyc",
                 ".pytest_cache/v/cache/lastfailed", ".hypothesis/examples/x", ".ruff_cache/x",
                 "bench/__pycache__/x.pyc", "bench/systems.py", "docs/cli.md"]:
        assert is_excluded(path, rules), path
    for path in ["requirements.lock", "pyproject.toml", "README.md", "src/chaosfm/__init__.py", "configs/gpt-tiny.yaml"]:
        assert not is_excluded(path, rules), path
