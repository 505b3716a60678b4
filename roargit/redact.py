"""Secret redaction, applied before anything is written to a ref that can be pushed.

Two independent nets, because neither alone is enough:

- **By name.** An environment variable or command-line flag whose name says "secret"
  (`HF_TOKEN`, `--api-key`, `password=`) has its value replaced, whatever the value looks like.
- **By value.** Well-known credential shapes (AWS key ids, GitHub/GitLab/Slack/OpenAI/Hugging
  Face tokens, Google API keys, JWTs, private-key blocks, passwords in URLs, bearer tokens) are
  replaced wherever they appear, whatever they are called.

The replacement is the marker `<redacted>`; the non-secret part around it is kept (the URL's
host, the token's vendor prefix, the flag's name) so a redacted record still reads.

Names are matched more eagerly for environment variables (`is_secret_name`: a secret word
anywhere in the name) than for flags and `key=value` pairs (`is_secret_flag`: the *last*
word of the name), because ML command lines are full of harmless names that contain a secret
word — `--max-tokens`, `--pad-token`, `--sort-key` — while environment names rarely are.

This runs on every `roar run` over the whole environment and argv. The value rules are compiled
on first use (by `re`'s own cache): most runs hold no value that triggers them, and compiling
all of them at import would add milliseconds to every `roar run`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

MARK = "<redacted>"

# --- names -----------------------------------------------------------------------------------

# Substring rules for environment names, case-insensitive. The lookaheads keep the few common
# harmless names that merely contain a secret word: TOKENIZERS_PARALLELISM (Hugging Face),
# GIT_AUTHOR_NAME (but AUTHORIZATION stays secret), KEYBOARD/KEYMAP.
_SECRET_ENV_NAME = re.compile(
    r"""
      KEY(?!BOARD|MAP)
    | TOKEN(?!IZ)
    | SECRET
    | PASSWORD | PASSWD | PASSPHRASE | PWD$
    | (?:^|_)PASS(?:$|_)
    | CREDENTIAL | (?:^|_)CREDS?(?:$|_)
    | AUTH(?!OR(?!IZ))
    | COOKIE | SESSION_?ID | SESSID
    | (?:^|_)DSN$
    | WEBHOOK
    | PRIVATE
    """,
    re.IGNORECASE | re.VERBOSE,
)

# PWD is the shell's current directory and OLDPWD the previous one: paths, not passwords,
# although `*PWD` (MYSQL_PWD, DB_PWD) is a common spelling for a password.
_NOT_SECRET_ENV_NAMES = frozenset({"PWD", "OLDPWD"})

# Last word of a flag or key name that makes its value secret.
_SECRET_WORDS = frozenset(
    {
        "password", "passwd", "passphrase", "pwd", "pass", "secret", "token", "key", "apikey",
        "credential", "credentials", "creds", "auth", "cookie", "dsn", "webhook",
    }
)  # fmt: skip
# A word before the last that makes "…-token" / "…-key" a harmless ML or data setting:
# tokenizer special tokens (`--pad-token "[PAD]"`), sort and join keys, and the like.
_BENIGN_MODIFIERS = frozenset(
    {
        "pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "stop", "special",
        "begin", "sentinel", "placeholder", "prefix", "suffix", "image", "vision", "audio",
        "video", "decoder", "encoder", "max", "min", "num", "n", "split", "sort", "primary",
        "partition", "group", "cache", "hash", "join", "metric", "label", "target", "input",
        "output", "text", "data", "dataset", "column", "col", "dict", "lookup", "index",
        "foreign", "row", "monitor", "no", "skip", "disable",
    }
)  # fmt: skip
_WORD_SPLIT = re.compile(r"[-_.]+")


def is_secret_name(name: str) -> bool:
    """True when an environment variable called `name` should never have its value recorded."""
    if name.upper() in _NOT_SECRET_ENV_NAMES:
        return False
    return _SECRET_ENV_NAME.search(name) is not None


def is_secret_flag(name: str) -> bool:
    """True when the value given to flag or key `name` (`--hf-token`, `db.password`) is secret.

    Leading dashes are ignored. The name's last word decides (`--max-tokens` is not secret,
    `--hf-token` is), unless the word before it marks an ML setting (`--pad-token`).
    """
    words = [w for w in _WORD_SPLIT.split(name.lower().lstrip("-")) if w]
    if not words:
        return False
    last = words[-1]
    if last not in _SECRET_WORDS and not (last.endswith("apikey") or last.endswith("password")):
        return False
    if len(words) > 1 and words[-2] in _BENIGN_MODIFIERS:
        return False
    return not (words[0] == "no" and len(words) > 1)


# --- values ----------------------------------------------------------------------------------

_NOT_YET = rf"(?!{re.escape(MARK)})"

# (pattern, replacement); every pattern keeps what is not secret in a group named `keep`.
# Order matters only for readability of the result: vendor tokens first (they keep their
# prefix), then the generic rules that would swallow the whole value.
_VALUE_RULES: list[tuple[str, int]] = []
_KEEP_AND_MARK = rf"\g<keep>{MARK}"


def _rule(pattern: str, flags: int = 0) -> None:
    _VALUE_RULES.append((pattern, flags))


# PEM / OpenSSH private keys: keep the armour lines so the reader sees what it was. A block
# with no END line (a truncated paste) is redacted to the end of the value.
_rule(
    r"(?P<keep>-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----)"
    r"(?:[\s\S]*?(?=-----END[A-Z0-9 ]*PRIVATE KEY-----)|[\s\S]+$)"
)
# JWT: header.payload.signature, all three base64url; the payload may be personal, so all goes.
_rule(r"(?P<keep>)\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")
# AWS access key ids (AKIA long-term, ASIA temporary, and the other IAM unique-id prefixes).
_rule(r"\b(?P<keep>AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16}\b")
# AWS secret access key: 40 base64 characters after a name that says so.
_rule(
    r"(?P<keep>aws_?secret\w*[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)
# GitHub: classic (ghp_ personal, gho_ OAuth, ghu_/ghs_ app, ghr_ refresh) and fine-grained.
_rule(r"\b(?P<keep>gh[pousr]_)[A-Za-z0-9]{20,255}\b")
_rule(r"\b(?P<keep>github_pat_)[A-Za-z0-9_]{20,255}")
_rule(r"\b(?P<keep>glpat-)[A-Za-z0-9_-]{20,}")
_rule(r"\b(?P<keep>xox[abeoprs]-)[A-Za-z0-9-]{10,}")
# OpenAI / Anthropic style `sk-…` (optionally `sk-proj-`, `sk-ant-`); a digit is required so
# that a long hyphenated word after "sk-" is not mistaken for a key.
_rule(r"\b(?P<keep>sk-(?:proj-|ant-)?)(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}")
# Stripe secret / restricted keys.
_rule(r"\b(?P<keep>[sr]k_(?:live|test)_)[A-Za-z0-9]{16,}")
_rule(r"\b(?P<keep>hf_)[A-Za-z0-9]{30,}")
_rule(r"\b(?P<keep>AIza)[0-9A-Za-z_-]{35}")
# scheme://user:PASSWORD@host — RFC 3986 userinfo; the password cannot hold '@' or '/' unless
# percent-encoded, which is what makes this pattern safe.
_rule(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)" + _NOT_YET + r"[^\s/@]+(?=@)")
# HTTP Authorization header values and bare bearer tokens.
_rule(
    r"(?P<keep>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token|digest)\s+)?)"
    + _NOT_YET
    + r"[^\s\"',;]+",
    re.IGNORECASE,
)
_rule(r"(?P<keep>\b(?:bearer|basic)\s+)" + _NOT_YET + r"[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)

# `--password=x`, `--token x`, `-pass x` and bare `db.password=x` / `?token=x&` inside a value
# (a `bash -c` script, a DSN, a query string). The name is checked by `is_secret_flag`.
_ASSIGNMENT = (
    r"(?<![\w./-])"  # a whole name: not the tail of a word or a path component (/key:x)
    r"(?:(?P<flag>--?[A-Za-z][\w.-]*)\s+(?=[^\s-])"  # --token x: dashed flags only, as
    r"|(?P<name>(?:--?)?[A-Za-z][\w.-]*)[\"']?\s*(?:=|:(?!//))\s*)"  # "a token" is prose
    r"(?P<q>[\"']?)" + _NOT_YET + r"(?P<val>[^\s&;,\"']+)"
)  # compiled on first use, by `re`'s cache, as the value rules are


def _redact_assignments(value: str) -> str:
    # A hand-rolled loop rather than re.sub: when a name turns out harmless, the search must
    # resume right after the name, not after the value it swallowed (`--data password=x`).
    parts: list[str] = []
    pos = 0
    assignment = re.compile(_ASSIGNMENT)
    while (m := assignment.search(value, pos)) is not None:
        name = m.group("flag") or m.group("name")
        if is_secret_flag(name):
            parts.append(value[pos : m.start("val")])
            parts.append(MARK)
            pos = m.end()
        else:
            parts.append(value[pos : m.start("q")])
            pos = m.start("q")
    if not parts:
        return value
    parts.append(value[pos:])
    return "".join(parts)


# Most values hold no secret. Substring tests (C speed) for what every rule needs let those
# through without running the rules' substitutions. Every rule's match contains one of these
# (lower-cased), so keep this list in step with the rules.
_RULE_TRIGGERS = (
    "private key", "eyj", "akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva",
    "aws", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "xox", "sk-",
    "sk_", "rk_", "hf_", "aiza", "://", "authorization", "bearer", "basic",
)  # fmt: skip
_NAME_TRIGGERS = (
    "pass", "pwd", "secret", "token", "key", "cred", "auth", "cookie", "dsn", "webhook",
)  # fmt: skip


def redact_value(value: str) -> str:
    """`value` with every secret found by its shape (or by the name just before it) replaced."""
    low = value.lower()
    if any(map(low.__contains__, _RULE_TRIGGERS)):
        for pattern, flags in _VALUE_RULES:
            value = re.sub(pattern, _KEEP_AND_MARK, value, flags=flags)
    if any(map(low.__contains__, _NAME_TRIGGERS)):
        value = _redact_assignments(value)
    return value


# --- argv and environment --------------------------------------------------------------------

# A token that starts another option rather than being a value: `--foo`, `-x`. A negative
# number or a bare "-" (stdin) is still a value.
_LOOKS_LIKE_FLAG = re.compile(r"^--?[A-Za-z]")
# Single-dash flags count only with a word for a name (`-pass`, `-token`, OpenSSL style);
# `-p` means too many things (port, parallel, parents) to redact what follows it.
_FLAG_NAME = re.compile(r"^(?:--[A-Za-z][\w.-]*|-[A-Za-z][\w.-]+)$")


def redact_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """`argv` with secrets replaced: by value pattern in every token, and the token that
    follows a secret-named flag (`--api-key X`, `-password X`) whatever it looks like."""
    out: list[str] = []
    secret_next = False
    for token in argv:
        if secret_next and not _LOOKS_LIKE_FLAG.match(token):
            out.append(MARK)
            secret_next = False
            continue
        secret_next = _FLAG_NAME.match(token) is not None and is_secret_flag(token)
        out.append(redact_value(token))
    return tuple(out)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with secret-named variables replaced by the marker and the rest redacted by value."""
    return {
        name: MARK if is_secret_name(name) else redact_value(value) for name, value in env.items()
    }


# --- file names ------------------------------------------------------------------------------

_SECRET_FILE_NAMES = frozenset({".env", ".netrc", "_netrc", ".pgpass"})
_SECRET_FILE_SUFFIXES = (".pem", ".p12", ".pfx")


def is_secret_path(path: str) -> bool:
    """True when a file's name says it holds secrets: `.env` (and `.env.local`, …), `.netrc`,
    `*secret*`, `*credential*`, `*.pem` and the like, and SSH keys (`id_rsa`, `id_ed25519.pub`:
    an `id_` name with no suffix but `.pub`, so that `id_utils.py` stays code). Such files are
    never copied into a code snapshot nor uploaded to a store."""
    name = path.rstrip("/").rpartition("/")[2].lower()
    if name in _SECRET_FILE_NAMES or name.startswith(".env."):
        return True
    if "secret" in name or "credential" in name or name.endswith(_SECRET_FILE_SUFFIXES):
        return True
    if name.startswith("id_"):
        dot = name.find(".")
        return dot < 0 or name[dot:] == ".pub"
    return False
