"""Secret redaction: high-specificity patterns replaced by ``[REDACTED:<kind>]``.

Applied by the service layer before anything reaches a transcript (and so the
index, which is derived from transcripts), and by ``scrub --secrets`` on
what is already stored. The patterns are compiled once, on first use, and a
pattern is only run when a cheap substring test says it could match, so an
ordinary 1 KB message costs a few microseconds (``bench/bench_redact.py``).

The secret itself is never kept: a redaction leaves the kind and a count,
nothing derived from the value. See docs/security.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from sessionctl.models import Message

MARK = "[REDACTED:{kind}]"
MARK_PREFIX = "[REDACTED:"
# The message metadata key that counts what was redacted: {kind: count}.
COUNT_KEY = "redactions"
CUSTOM_KIND = "custom"


def _mixed(value: str) -> bool:
    """True for a token that looks machine-made: letters and digits both present."""
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


_PLACEHOLDER = re.compile(
    r"(?:\$|<|\{\{|\[REDACTED|%\(|\*{3}|x{4,}|X{4,}|\.\.\.|os\.environ|getenv|env\()",
)


def _real_value(value: str) -> bool:
    """An assigned value worth redacting: not empty, not a placeholder or a reference."""
    return len(value) >= 4 and not _PLACEHOLDER.match(value)


def _random_looking(value: str) -> bool:
    """True for a machine-made token: upper case, lower case and digits all present."""
    return (
        any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    )


class Rule(NamedTuple):
    """One secret shape: its kind, its regex, cheap triggers and an optional check.

    ``group`` names the part replaced (0: the whole match). ``triggers`` are
    substrings of which one must be in the text (``folded``: in the lower-cased
    text) for the regex to run at all.
    """

    kind: str
    pattern: str
    triggers: tuple[str, ...]
    folded: bool = False
    group: int | str = 0
    check: Callable[[str], bool] | None = None
    flags: int = 0
    boundary: bool = False  # the match must not follow a letter, digit, _ or -


_END = r"(?![A-Za-z0-9_-])"
# Spelled out in lower, UPPER and Capitalized case rather than (?i:...): the regex
# engine then skips ahead to a possible first letter, 8x faster on 1 KB.
_WORDS = ("token", "secret_?key", "secret", "passwd", "password", "pass", "api_?key")
_KEYWORDS = "(?:" + "|".join(f"{w}|{w.upper()}|{w.capitalize()}" for w in _WORDS) + ")"
RULES: tuple[Rule, ...] = (
    Rule(
        "private-key",
        r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:[\s\S]*?-----END \1-----|[\sA-Za-z0-9+/=:,.-]*)",
        ("PRIVATE KEY",),
    ),
    Rule(
        "anthropic-key",
        r"sk-ant-(?:api|admin|oat|sid)\d{2}-[A-Za-z0-9_-]{20,}" + _END,
        ("sk-ant-",),
        boundary=True,
    ),
    Rule(
        "openai-key",
        r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}" + _END,
        ("sk-",),
        boundary=True,
        check=lambda v: _random_looking(v[3:]) and v.count("-") <= 10,
    ),
    Rule(
        "aws-access-key-id",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
    ),
    Rule(
        "aws-secret-key",
        r"(?i:aws_?secret(?:_?access)?_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        ("secret_access_key", "secretaccesskey", "secret_key", "secretkey"),
        folded=True,
        group="secret",
        check=_mixed,
    ),
    Rule(
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "slack-token",
        r"\bxox[abposr]-(?:[0-9]+-)+[A-Za-z0-9-]{8,}" + _END,
        ("xox",),
    ),
    Rule(
        "slack-webhook",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,}",
        ("hooks.slack.com",),
    ),
    Rule("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}" + _END, ("AIza",)),
    Rule(
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,}" + _END,
        ("eyJ",),
    ),
    Rule(
        "bearer-token",
        r"(?:[Aa]uthorization|AUTHORIZATION)[\"']?\s*[:=]\s*[\"']?(?i:bearer|token)\s+"
        r"(?P<secret>[A-Za-z0-9._~+/=-]{12,})",
        ("authorization",),
        folded=True,
        group="secret",
        check=lambda v: _mixed(v) and not v.startswith(MARK_PREFIX),
    ),
    # NAME_TOKEN=value, NAME_SECRET: "value", db_password = "value" ...: the regex
    # starts at the keyword (fast); _assignment_value looks back for the name.
    Rule(
        "secret-assignment",
        _KEYWORDS + r"(?![A-Za-z0-9_])[\"']?"
        r"(?P<sep>\s*:?=\s*|\s*:\s*)"
        r"(?:(?P<q>[\"'])(?P<quoted>[^\"'\s\\]{4,256})(?P=q)"
        r"|(?P<bare>[^\s\"'`,;)\]}]{6,256}))",
        ("token", "secret", "pass", "api_key", "apikey"),
        folded=True,
        group="secret",  # quoted or bare: see _assignment_value
    ),
)
_ASSIGNMENT_NAME = re.compile(r"[A-Z0-9_-]+")


def _assignment_value(match: re.Match[str]) -> tuple[int, int] | None:
    """The span of an assignment's value, or None when it is not a secret.

    Quoted values are secrets; a bare value only after an UPPER_CASE name (shell,
    .env and YAML style) or when it looks machine-made (letters and digits), and
    never when it looks like code, so that ``password = getpass()`` or
    ``token: required`` stay.
    """
    text = match.string
    start = match.start()
    if start and text[start - 1].isalnum():
        return None  # inside a word: bypass=, mytoken=
    name_start = start
    while name_start and (text[name_start - 1].isalnum() or text[name_start - 1] in "_-"):
        name_start -= 1
    quoted = match.group("quoted")
    if quoted is not None:
        if not _real_value(quoted):
            return None
        return match.span("quoted")
    bare = match.group("bare")
    if bare is None or not _real_value(bare):
        return None
    sep = match.group("sep")
    if sep.strip() == ":" and not sep.endswith((" ", "\t")):
        return None  # token:abc is a URL, a label or a time, not an assignment
    name = text[name_start : match.start("sep")].strip("\"'")
    upper = _ASSIGNMENT_NAME.fullmatch(name) is not None
    looks_code = "(" in bare or "[" in bare or bare.endswith(".") or "self." in bare
    if looks_code:
        return None
    if upper or (_mixed(bare) and len(bare) >= 8):
        return match.span("bare")
    return None


class Redacted(NamedTuple):
    """Text after redaction and what was replaced, as ``{kind: count}``."""

    text: str
    counts: dict[str, int]


class Redactor:
    """The compiled rules, extra patterns and allow-list of one configuration."""

    def __init__(
        self, extra: Iterable[str] = (), allow: Iterable[str] = (), *, builtin: bool = True
    ) -> None:
        self._rules: list[tuple[Rule, re.Pattern[str]]] = [
            (rule, re.compile(rule.pattern, rule.flags)) for rule in (RULES if builtin else ())
        ]
        self._extra = [re.compile(p) for p in extra]
        self._allow = [re.compile(p) for p in allow]
        # Every rule's triggers in one flat tuple each (text / lower-cased text): a
        # clean text is told by one loop of substring tests (~2x faster than per rule).
        active = [rule for rule, _regex in self._rules]
        self._plain = tuple(dict.fromkeys(t for r in active if not r.folded for t in r.triggers))
        self._folded = tuple(dict.fromkeys(t for r in active if r.folded for t in r.triggers))

    def clean(self, text: str) -> bool:
        """True when no rule can match ``text`` (not one trigger in it, no extra patterns)."""
        if self._extra:
            return False
        for trigger in self._plain:
            if trigger in text:
                return False
        if self._folded:
            folded = text.lower()
            for trigger in self._folded:
                if trigger in folded:
                    return False
        return True

    def _allowed(self, value: str) -> bool:
        return any(p.fullmatch(value) for p in self._allow)

    def text(self, text: str) -> Redacted:
        """Return ``text`` with every secret replaced, and the counts."""
        counts: dict[str, int] = {}
        if not text or self.clean(text):
            return Redacted(text, counts)
        folded: str | None = None
        for rule, regex in self._rules:
            if rule.folded:
                if folded is None:
                    folded = text.lower()
                haystack = folded
            else:
                haystack = text
            if not any(t in haystack for t in rule.triggers):
                continue
            text = self._apply(text, regex, rule, counts)
            folded = None
        for regex in self._extra:
            text = self._apply(text, regex, Rule(CUSTOM_KIND, regex.pattern, ()), counts)
        return Redacted(text, counts)

    def _apply(self, text: str, regex: re.Pattern[str], rule: Rule, counts: dict[str, int]) -> str:
        out: list[str] = []
        last = 0
        for match in regex.finditer(text):
            if rule.kind == "secret-assignment":
                span = _assignment_value(match)
            elif isinstance(rule.group, str) and rule.group in regex.groupindex:
                span = match.span(rule.group) if match.group(rule.group) is not None else None
            elif rule.kind == CUSTOM_KIND and "secret" in regex.groupindex:
                span = match.span("secret") if match.group("secret") is not None else None
            else:
                span = match.span()
            if span is None or span[0] == span[1]:
                continue
            if (
                rule.boundary
                and span[0]
                and (text[span[0] - 1].isalnum() or text[span[0] - 1] in "_-")
            ):
                continue
            value = text[span[0] : span[1]]
            if value.startswith(MARK_PREFIX) or (rule.check is not None and not rule.check(value)):
                continue
            if self._allowed(value):
                continue
            out.append(text[last : span[0]])
            out.append(MARK.format(kind=rule.kind))
            last = span[1]
            counts[rule.kind] = counts.get(rule.kind, 0) + 1
        if not out:
            return text
        out.append(text[last:])
        return "".join(out)

    def value(self, value: Any, counts: dict[str, int]) -> Any:
        """Redact every string inside a JSON value (dicts, lists), adding to ``counts``."""
        if isinstance(value, str):
            result = self.text(value)
            for kind, n in result.counts.items():
                counts[kind] = counts.get(kind, 0) + n
            return result.text
        if isinstance(value, dict):
            return {k: self.value(v, counts) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, counts) for v in value]
        return value

    def matches(self, text: str) -> int:
        """How many secrets ``text`` holds (what :meth:`text` would replace)."""
        return sum(self.text(text).counts.values())


def merge_counts(metadata: dict[str, Any] | None, counts: dict[str, int]) -> dict[str, Any] | None:
    """Return ``metadata`` with ``counts`` added under :data:`COUNT_KEY` (None stays None
    when there is nothing to count)."""
    if not counts:
        return metadata
    out = dict(metadata or {})
    previous = out.get(COUNT_KEY)
    merged: dict[str, int] = {}
    if isinstance(previous, dict):
        merged.update({k: v for k, v in previous.items() if isinstance(v, int)})
    for kind, n in counts.items():
        merged[kind] = merged.get(kind, 0) + n
    out[COUNT_KEY] = merged
    return out


_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], Redactor] = {}


def redactor(extra: Iterable[str] = (), allow: Iterable[str] = ()) -> Redactor:
    """Return the (cached) redactor for these extra patterns and allow-list."""
    key = (tuple(extra), tuple(allow))
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = Redactor(*key)
    return found


def redact_message(redact: Redactor, message: Message) -> Message:
    """Return ``message`` with its content, tool calls and metadata redacted, the
    counts added to its metadata under :data:`COUNT_KEY` (unchanged when clean)."""
    if redact.clean(_joined(message)):
        # No trigger in any of its texts (a trigger in one text is in them joined;
        # one made by the joining only costs the full pass below): nothing to do.
        return message
    counts: dict[str, int] = {}
    result = redact.text(message.content)
    for kind, n in result.counts.items():
        counts[kind] = counts.get(kind, 0) + n
    tool_calls = message.tool_calls
    if tool_calls is not None:
        tool_calls = redact.value(tool_calls, counts)
    metadata = message.metadata
    if metadata is not None:
        metadata = {
            k: (v if k == COUNT_KEY else redact.value(v, counts)) for k, v in metadata.items()
        }
    if not counts:
        return message
    return message._replace(
        content=result.text, tool_calls=tool_calls, metadata=merge_counts(metadata, counts)
    )


def _joined(message: Message) -> str:
    """Every text :func:`redact_message` redacts in ``message``, joined by newlines."""
    parts = [message.content]
    if message.tool_calls is not None:
        _strings(message.tool_calls, parts)
    if message.metadata is not None:
        for key, value in message.metadata.items():
            if key != COUNT_KEY:
                _strings(value, parts)
    return "\n".join(parts)


def _strings(value: Any, out: list[str]) -> None:
    """Append every string inside a JSON value to ``out`` (what :meth:`Redactor.value` visits)."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for inner in value.values():
            _strings(inner, out)
    elif isinstance(value, list):
        for inner in value:
            _strings(inner, out)
