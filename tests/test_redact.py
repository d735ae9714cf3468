"""Secret redaction: what is caught, what is left alone, and every write path.

The fake secrets are generated here from random characters of the right shape;
none is a real key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import Cli
from llm_server import FakeLLMServer, Reply, llm_server

from sessionctl import Store
from sessionctl.config import load_settings
from sessionctl.redact import Redactor, redactor

__all__ = ["llm_server"]  # the fixture, re-exported for pytest
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if (
            any(c.isdigit() for c in value)
            and any(c.isupper() for c in value)
            and (any(c.islower() for c in value) or alphabet == UPPER_DIGITS)
        ):
            return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def fake_secrets(seed: int = 19) -> list[tuple[str, str, str]]:
    """(kind, secret literal, text carrying it): real-shaped, random, never real."""
    rng = random.Random(seed)
    out: list[tuple[str, str, str]] = []
    for i in range(6):
        key = "sk-" + _rand(rng, ALNUM, 48)
        out.append(("openai-key", key, f"use {key} for the batch job"))
        proj = "sk-proj-" + _rand(rng, URLSAFE, 120 + i)
        out.append(("openai-key", proj, f'OPENAI_API_KEY="{proj}"'))
        ant = "sk-ant-api03-" + _rand(rng, URLSAFE, 93) + "AA"
        out.append(("anthropic-key", ant, f"client = Anthropic(api_key='{ant}')"))
        akid = rng.choice(["AKIA", "ASIA"]) + _rand(rng, UPPER_DIGITS, 16)
        out.append(("aws-access-key-id", akid, f"aws_access_key_id = {akid}"))
        secret = _rand(rng, B64, 40)
        out.append(("aws-secret-key", secret, f"aws_secret_access_key = {secret}\n"))
        gh = rng.choice(["ghp_", "gho_", "ghs_"]) + _rand(rng, ALNUM, 36)
        out.append(("github-token", gh, f"git clone https://{gh}@github.com/acme/x.git"))
        pat = "github_pat_" + _rand(rng, ALNUM, 22) + "_" + _rand(rng, ALNUM, 59)
        out.append(("github-token", pat, f"token: {pat}"))
        slack = f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**11, 10**12)}-" + _rand(
            rng, ALNUM, 24
        )
        out.append(("slack-token", slack, f"SLACK_BOT={slack}"))
        hook = (
            "https://hooks.slack.com/services/T"
            + _rand(rng, UPPER_DIGITS, 8)
            + "/B"
            + _rand(rng, UPPER_DIGITS, 8)
            + "/"
            + _rand(rng, ALNUM, 24)
        )
        out.append(("slack-webhook", hook, f"curl -X POST {hook} -d @msg.json"))
        google = "AIza" + _rand(rng, URLSAFE, 35)
        out.append(("google-api-key", google, f"maps?key={google}&q=paris"))
        body = "\n".join(_rand(rng, B64, 64) for _ in range(8))
        pem = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
        out.append(("private-key", body.splitlines()[3], f"here is my key:\n{pem}\nthanks"))
        head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = _b64url(json.dumps({"sub": str(rng.random()), "iat": 1700000000 + i}).encode())
        jwt = f"{head}.{claims}.{_b64url(rng.randbytes(32))}"
        out.append(("jwt", jwt, f"the cookie was session={jwt}; Path=/"))
        bearer = _rand(rng, URLSAFE + ".", 40)
        out.append(
            ("bearer-token", bearer, f'curl -H "Authorization: Bearer {bearer}" https://api.x/v1')
        )
        pw = _rand(rng, ALNUM + "!@#%^&*", 14)
        out.append(("secret-assignment", pw, f"export DB_PASSWORD={pw}"))
        tok = _rand(rng, ALNUM, 32)
        out.append(("secret-assignment", tok, f'STRIPE_WEBHOOK_SECRET="{tok}"'))
        out.append(("secret-assignment", tok[:20], f"CI_DEPLOY_TOKEN: {tok[:20]}"))
        out.append(("secret-assignment", tok[4:28], f"SECRET_KEY = '{tok[4:28]}'"))
    return out


def ordinary_messages() -> list[str]:
    """Prose, code, hashes, UUIDs, URLs, base64 images: none of it is a secret."""
    rng = random.Random(7)
    msgs = [
        "This is a risk-free change: the migration is reversible.",
        "The task-list and the desk-lamp are on the whiteboard.",
        "Use scikit-learn (sk-learn in some old docs) for the baseline.",
        "Ask-Me-Anything sessions run on Fridays; the kiosk-mode browser too.",
        "Our token budget is 4096 tokens per request; MAX_TOKENS=4096 in the env.",
        "password = getpass.getpass()",
        "token = os.environ['GITHUB_TOKEN']",
        'api_key = os.getenv("OPENAI_API_KEY")',
        "GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}",
        "Set DB_PASSWORD=<your password> in .env, never commit it.",
        "export API_TOKEN=$API_TOKEN",
        "The secret to good tests is isolation.",
        "Password: required field, at least 12 characters.",
        "Authorization: Bearer <token>",
        "Add an `Authorization` header with your token.",
        "def check_password(password: str) -> bool:",
        "if token is None: raise AuthError('no token')",
        "Tokens: 1234 prompt, 567 completion.",
        "The JWT header starts with eyJ, which is base64 for '{\"'.",
        "AKIA is the prefix of AWS access key ids; ours are in the vault.",
        "ghp_ is the prefix of GitHub personal tokens.",
        "Meeting at 12:30, token:ring is the next agenda item.",
        "-----BEGIN CERTIFICATE----- is a public certificate, not a key.",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk8cVQ7b6RYp3W6i5Wq9JgGn0EhP3nXfA9mS2kUe8Zt me@host",
        "The commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it.",
        "See https://example.com/docs/api?section=auth&lang=en#tokens for details.",
        "Price went from $12.50 to $13.75 (a 10% rise).",
        "Run `pytest -k 'not slow' -x` before pushing.",
        "SELECT name, secret_count FROM vaults WHERE owner = 'ops';",
        "The passphrase feature is documented in the manual, chapter 4.",
        "She said the pass-through mode was on by default.",
        "Use the --token-file option instead of passing tokens on the command line.",
        "sk-1 and sk-2 are the two shards in the ring.",
        "Kiosk-ABCDEFGHIJ1234567890abcdef is a machine name, not a key.",
    ]
    words = (
        "the a model index session transcript vector search cache token budget window "
        "risk-free desk-top kiosk-mode ask-me password-less secret-santa review merge "
        "deploy rollback latency throughput embedding cosine distance threshold"
    ).split()
    for i in range(60):
        msgs.append(" ".join(rng.choice(words) for _ in range(rng.randrange(5, 40))) + ".")
        if i % 3 == 0:
            msgs[-1] = msgs[-1].capitalize()
    for i in range(25):
        data = rng.randbytes(32)
        msgs.append(f"sha256 {hashlib.sha256(data).hexdigest()} matches the release")
        msgs.append(f"md5: {hashlib.md5(data).hexdigest()}  file_{i}.tar.gz")
        msgs.append(f"request id {uuid.UUID(int=rng.getrandbits(128))} failed with 502")
    for i in range(15):
        image = base64.b64encode(rng.randbytes(300)).decode()
        msgs.append(f"![chart {i}](data:image/png;base64,{image})")
        msgs.append(
            f"https://cdn.example.org/a/{rng.getrandbits(64):x}/img_{i}.png?w=640&h=480&v={i}"
        )
    code = [
        "for i, token in enumerate(tokens):\n    out.append(vocab[token])",
        "class TokenBucket:\n    def __init__(self, rate: float) -> None:\n        self.r = rate",
        "secret_name = f'{env}-db-credentials'",
        "PASSWORD_MIN_LENGTH = 12",
        "config.password_hash = bcrypt.hashpw(pw, salt)",
        "headers = {'Authorization': f'Bearer {self.token}'}",
        "assert token_count(text) <= MAX_TOKEN",
        "let secret = vault.read(path).await?;",
        "x = np.frombuffer(buf, dtype=np.uint8)",
        "git log --format=%H -n 20 | head",
    ]
    while len(msgs) < 230:
        msgs.extend(code)
    return msgs


def test_corpus_sizes() -> None:
    assert len(fake_secrets()) >= 50
    assert len(ordinary_messages()) >= 200


@pytest.mark.parametrize("text", ordinary_messages())
def test_ordinary_text_is_unchanged(text: str) -> None:
    result = redactor().text(text)
    assert result.counts == {}, result.text
    assert result.text == text


@pytest.mark.parametrize(("kind", "secret", "text"), fake_secrets())
def test_fake_secrets_are_caught(kind: str, secret: str, text: str) -> None:
    result = redactor().text(text)
    assert secret not in result.text
    assert f"[REDACTED:{kind}]" in result.text
    assert result.counts.get(kind, 0) >= 1


def test_assignment_keeps_the_name_and_prefix() -> None:
    text = "export GITHUB_TOKEN=ghp_" + "a1B2" * 9
    assert redactor().text(text).text == "export GITHUB_TOKEN=[REDACTED:github-token]"
    assert redactor().text("DB_PASSWORD=hunter2hunter2").text == (
        "DB_PASSWORD=[REDACTED:secret-assignment]"
    )


def test_extra_patterns_and_allow_list() -> None:
    custom = Redactor(extra=[r"ACME-[0-9]{8}", r"pin (?P<secret>\d{4,})"])
    result = custom.text("ticket ACME-12345678, pin 98765")
    assert result.text == "ticket [REDACTED:custom], pin [REDACTED:custom]"
    assert result.counts == {"custom": 2}
    allowed = Redactor(allow=[r"AKIAIOSFODNN7EXAMPLE"])
    assert allowed.text("docs use AKIAIOSFODNN7EXAMPLE").counts == {}
    assert allowed.text("real AKIAIOSFODNN7EXAMPLF").counts == {"aws-access-key-id": 1}


def test_redaction_is_idempotent() -> None:
    for _kind, _secret, text in fake_secrets():
        once = redactor().text(text).text
        assert redactor().text(once).text == once


# -- every write path ------------------------------------------------------------


def _cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SESSIONCTL_HOME": str(home)}
    env.pop("SESSIONCTL_REDACT", None)
    return subprocess.run(
        [sys.executable, "-m", "sessionctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def grep_home(home: Path, literals: list[str]) -> list[str]:
    """Every file under ``home`` (transcripts, indexes, logs, temps) holding a literal."""
    found = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {lit[:12]}" for lit in literals if lit.encode() in data]
    return found


def test_python_api_and_import_paths_redact(tmp_path: Path) -> None:
    secrets = fake_secrets(3)
    store = Store(tmp_path / "home")
    session = store.session("api")
    kind, lit, text = secrets[0]
    m = session.add_message({"role": "user", "content": text, "metadata": {"note": text}})
    assert lit not in m.content and m.metadata is not None
    assert m.metadata["redactions"] == {kind: 2}
    assert m.metadata["note"] == m.content
    u, _ = session.store(secrets[1][2], secrets[2][2])
    assert u.metadata == {"redactions": {secrets[1][0]: 1}}
    call = [{"id": "c1", "type": "function", "function": {"arguments": secrets[3][2]}}]
    session.add_messages([{"role": "assistant", "content": "", "tool_calls": call}])
    session.update(system="You are terse. " + secrets[4][2])
    data = {"messages": [{"role": "user", "content": s[2]} for s in secrets[5:10]]}
    store.from_dict(data, name="fromdict")
    store.reindex(["api", "fromdict"])
    assert grep_home(tmp_path / "home", [s[1] for s in secrets[:10]]) == []
    # turned off, the text is written as it is
    plain = Store(settings=load_settings(home=tmp_path / "home2")._replace(redact=False))
    assert plain.session("x").add_message({"role": "user", "content": text}).content == text


def test_cli_write_paths_redact_and_no_redact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secrets = fake_secrets(5)
    lits = [s[1] for s in secrets[:6]]
    assert _cli(home, "add", "-s", "w", "--role", "user", secrets[0][2]).returncode == 0
    assert _cli(home, "add", "-s", "w", "--role", "user", stdin=secrets[1][2]).returncode == 0
    assert _cli(home, "store", "-s", "w", secrets[2][2], secrets[3][2]).returncode == 0
    doc = json.dumps({"name": "imp", "messages": [{"role": "user", "content": secrets[4][2]}]})
    assert _cli(home, "import", "-", "--as", "imp", stdin=doc).returncode == 0
    shown = _cli(home, "show", "w", "--json")
    assert shown.returncode == 0, shown.stderr
    messages = json.loads(shown.stdout)["messages"]
    assert [m["metadata"]["redactions"] for m in messages] == [{s[0]: 1} for s in secrets[:4]]
    assert grep_home(home, lits[:5]) == []
    # --no-redact for one command; config `redact = false` for all
    assert (
        _cli(home, "add", "-s", "raw", "--role", "user", "--no-redact", secrets[5][2]).returncode
        == 0
    )
    assert grep_home(home, [lits[5]]) != []
    cfg = tmp_path / "config.toml"
    cfg.write_text("redact = false\n")
    env_home = tmp_path / "home3"
    proc = subprocess.run(
        [sys.executable, "-m", "sessionctl", "add", "-s", "c", "--role", "user", secrets[0][2]],
        env={**os.environ, "SESSIONCTL_HOME": str(env_home), "SESSIONCTL_CONFIG": str(cfg)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert grep_home(env_home, [lits[0]]) != []


def test_bad_redact_settings_are_usage_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('redact_patterns = ["(unclosed"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sessionctl", "add", "-s", "c", "--role", "user", "hi"],
        env={**os.environ, "SESSIONCTL_HOME": str(tmp_path / "h"), "SESSIONCTL_CONFIG": str(cfg)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "redact_patterns" in proc.stderr and "Traceback" not in proc.stderr


def test_chat_sends_the_original_and_stores_the_redacted(
    cli: Cli, llm_server: FakeLLMServer, home: Path
) -> None:
    secrets = fake_secrets(11)
    prompt_kind, prompt_secret, prompt = secrets[0]
    answer_kind, answer_secret, answer = secrets[6]
    llm_server.push(Reply(text=answer, chunk_size=7), Reply(text="ok"))
    opts = ["--api-base", llm_server.base_url, "-m", "test-model"]
    first = cli("chat", "-s", "c", *opts, prompt)
    assert first.exit_code == 0, first.stderr
    assert first.stdout == answer + "\n"  # the user sees the answer as it came
    assert llm_server.requests[-1].body["messages"][-1]["content"] == prompt
    second = cli("chat", "-s", "c", *opts, "and now?")
    assert second.exit_code == 0, second.stderr
    history = [m["content"] for m in llm_server.requests[-1].body["messages"]]
    assert prompt_secret not in "".join(history)  # older turns come from the disk
    assert f"[REDACTED:{prompt_kind}]" in history[-3]
    assert f"[REDACTED:{answer_kind}]" in history[-2]
    store = Store(home)
    store.reindex(["c"])
    assert grep_home(home, [prompt_secret, answer_secret]) == []


def test_config_set_extra_pattern_then_add(home: Path) -> None:
    env = dict(os.environ)
    run = [sys.executable, "-m", "sessionctl"]
    for args in (
        ["config", "set", "redact_patterns", "ACME-[0-9]{4}"],
        ["config", "set", "redact", "true"],
    ):
        proc = subprocess.run([*run, *args], env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*run, "add", "-s", "x", "--role", "user", "id ACME-1234 ok"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert grep_home(home, ["ACME-1234"]) == []
    proc = subprocess.run(
        [*run, "config", "set", "redact", "maybe"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "true or false" in proc.stderr


def test_clean_text_check_agrees_with_the_rules() -> None:
    """The quick "no trigger anywhere" test (import's fast path) never lets a secret by:
    every rule's every trigger, alone or inside clean text, makes a text not clean."""
    from sessionctl.models import Message
    from sessionctl.redact import RULES, redact_message

    r = redactor()
    now = "2025-01-01T00:00:00Z"
    for rule in RULES:
        for trigger in rule.triggers:
            texts = [trigger, f"plain words {trigger} more"]
            if rule.folded:  # matched in any case
                texts += [trigger.upper(), f"plain {trigger.capitalize()}"]
            for text in texts:
                assert not r.clean(text), (rule.kind, text)
    assert r.clean("the project meeting deadline report budget team")
    assert not Redactor(extra=["x+"]).clean("clean words")  # extra patterns always run
    for kind, lit, text in fake_secrets()[:4]:
        # the secret only deep inside a tool call or the metadata of a clean message
        calls = [{"function": {"arguments": [{"k": text}]}}]
        message = Message("a", 1, "assistant", "fine", now, tool_calls=calls)
        got = redact_message(r, message)
        assert lit not in json.dumps(got.tool_calls) and got.metadata == {"redactions": {kind: 1}}
        nested = message._replace(tool_calls=None, metadata={"deep": {"list": ["ok", text]}})
        assert lit not in json.dumps(redact_message(r, nested).metadata)
    clean = Message("b", 1, "user", "hello", now, metadata={"n": ["x"]})
    assert redact_message(r, clean) is clean
