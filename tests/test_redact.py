"""Secret redaction: every rule has a case it must catch and a look-alike it must leave."""

from __future__ import annotations

import pytest

from roargit.redact import (
    MARK,
    is_secret_flag,
    is_secret_name,
    redact_argv,
    redact_env,
    redact_value,
)

# Fabricated credentials in the real formats (none of them is live).
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_PAT = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"id={AWS_KEY_ID}", f"id=AKIA{MARK}"),
        ("ASIAY34FZKBOKMUTVV7A", f"ASIA{MARK}"),
        (f"aws_secret_access_key = {AWS_SECRET}", f"aws_secret_access_key = {MARK}"),
        (f'"AWS_SECRET_ACCESS_KEY": "{AWS_SECRET}"', f'"AWS_SECRET_ACCESS_KEY": "{MARK}"'),
        (GITHUB_PAT, f"ghp_{MARK}"),
        ("gho_" + "x" * 36, f"gho_{MARK}"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", f"github_pat_{MARK}"),
        ("glpat-Abc123def456ghi789jk", f"glpat-{MARK}"),
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKl", f"xoxb-{MARK}"),
        ("xoxp-1234567890-abcdef", f"xoxp-{MARK}"),
        ("sk-abc123def456ghi789jkl012mno345", f"sk-{MARK}"),
        ("sk-proj-Abc123Def456Ghi789Jkl012", f"sk-proj-{MARK}"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", f"sk_live_{MARK}"),
        ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", f"hf_{MARK}"),
        ("key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", f"key={MARK}"),
        ("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", f"AIza{MARK}"),
        (f"cookie {JWT} end", f"cookie {MARK} end"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            f"-----BEGIN RSA PRIVATE KEY-----{MARK}-----END RSA PRIVATE KEY-----",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
            f"-----BEGIN OPENSSH PRIVATE KEY-----{MARK}",
        ),
        ("postgres://bob:hunter2@db.example:5432/x", f"postgres://bob:{MARK}@db.example:5432/x"),
        ("https://:tok3n@host/repo.git", f"https://:{MARK}@host/repo.git"),
        ("Authorization: Bearer abc.def-ghi_jkl", f"Authorization: Bearer {MARK}"),
        ("authorization=token xyz", f"authorization=token {MARK}"),
        ("curl -H 'bearer 0123456789abcdef'", f"curl -H 'bearer {MARK}'"),
        ("Basic dXNlcjpwYXNzd29yZA==", f"Basic {MARK}"),
        ("--password=hunter2", f"--password={MARK}"),
        ("python t.py --token abc --out x", f"python t.py --token {MARK} --out x"),
        ("host=db password=hunter2 sslmode=on", f"host=db password={MARK} sslmode=on"),
        ("https://api.example/v1?api_key=abc123&page=2", f"https://api.example/v1?api_key={MARK}&page=2"),
        ("X-Api-Key: abc123", f"X-Api-Key: {MARK}"),
        ('{"password":"hunter2"}', f'{{"password":"{MARK}"}}'),
        ("--data password=x", f"--data password={MARK}"),
        ("openssl enc -pass pass:s3cr3t", f"openssl enc -pass {MARK}"),
    ],
)  # fmt: skip
def test_value_patterns_catch_secrets(value: str, expected: str) -> None:
    assert redact_value(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "AKIA-not-a-key",  # too short, wrong alphabet
        "AKIAIOSFODNN7EXAMPLEX1",  # longer than a key id: part of something else
        "aws_region=us-east-1",
        "ghp_short",
        "github_pat_",
        "glpat-short",
        "xoxz-123456789012-abc",  # not a Slack token type
        "sk-learn-some-long-hyphenated-name",  # no digit: a word, not a key
        "task-abc123def456ghi789jkl012",  # "sk-" inside a word
        "hf_home",
        "AIzaShort",
        "eyJhbGciOiJIUzI1NiJ9",  # a lone base64 JSON header is not a token
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
        "https://user@host/repo.git",
        "https://registry.example:443/@types/node",  # '@' in the path, not userinfo
        "http://host:8080/path",
        "s3://bucket/key:with:colons/data.csv",
        "bearer of bad news",  # too short to be a token
        "--max-tokens=100",
        "--pad-token=[PAD]",
        "--token-file=/run/secrets/hf",
        "max_tokens=256 temperature=0",
        "a token here and a password there",
        "tokenizer=bert-base-uncased",
        "sort_key=created_at",
        "/data/train.csv",
        "",
    ],
)
def test_value_patterns_leave_lookalikes(value: str) -> None:
    assert redact_value(value) == value


def test_redact_value_is_idempotent() -> None:
    value = f"--token {GITHUB_PAT} postgres://u:p@h/db password=x Bearer 0123456789abcdef"
    once = redact_value(value)
    assert "p@h" not in once and "0123456789abcdef" not in once and GITHUB_PAT not in once
    assert redact_value(once) == once


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN", "hf_token", "GITHUB_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "DB_PASSWORD", "PGPASSWORD", "MYSQL_PWD",
        "SMTP_PASS", "FTP_PASSWD", "GPG_PASSPHRASE", "GOOGLE_APPLICATION_CREDENTIALS",
        "DOCKER_AUTH_CONFIG", "HTTP_AUTHORIZATION", "SESSION_COOKIE", "PHPSESSID",
        "SENTRY_DSN", "SLACK_WEBHOOK_URL", "SSH_PRIVATE", "CLIENT_SECRET", "API_CREDS",
    ],
)  # fmt: skip
def test_secret_env_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "PWD",  # the current directory, not a password
        "OLDPWD",
        "TOKENIZERS_PARALLELISM",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "PATH",
        "CUDA_VISIBLE_DEVICES",
        "PASSENGER_COUNT",
        "KEYBOARD_LAYOUT",
        "HOME",
    ],
)
def test_harmless_env_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("--token", True),
        ("--hf-token", True),
        ("--hub_token", True),
        ("--api-key", True),
        ("--apikey", True),
        ("--openaiapikey", True),
        ("--password", True),
        ("--db-password", True),
        ("--client-secret", True),
        ("-password", True),
        ("--auth", True),
        ("--credentials", True),
        ("db.password", True),
        ("--max-tokens", False),
        ("--max-new-tokens", False),
        ("--pad-token", False),
        ("--eos_token", False),
        ("--sort-key", False),
        ("--token-file", False),
        ("--tokenizer", False),
        ("--author", False),
        ("--no-auth", False),
        ("--output", False),
        ("--", False),
    ],
)
def test_secret_flag_names(name: str, secret: bool) -> None:
    assert is_secret_flag(name) is secret


def test_argv_redacts_value_after_secret_flag() -> None:
    argv = ["python", "train.py", "--api-key", "abc", "--lr", "0.1", "--password", "p@ss"]
    assert redact_argv(argv) == (
        "python", "train.py", "--api-key", MARK, "--lr", "0.1", "--password", MARK,
    )  # fmt: skip


def test_argv_equals_form_and_value_patterns() -> None:
    argv = ["tool", "--token=zzz", "--remote=https://x:s3cr3t@h/r", GITHUB_PAT]
    assert redact_argv(argv) == (
        "tool", f"--token={MARK}", f"--remote=https://x:{MARK}@h/r", f"ghp_{MARK}",
    )  # fmt: skip


def test_argv_boolean_secret_flag_does_not_eat_next_flag() -> None:
    argv = ["run.py", "--use_auth_token", "--output_dir", "out"]
    assert redact_argv(argv) == tuple(argv)


def test_argv_single_dash_rules() -> None:
    # -p is a port, a parallelism, a parents flag...: too generic to redact after.
    assert redact_argv(["server", "-p", "8080"]) == ("server", "-p", "8080")
    assert redact_argv(["openssl", "-pass", "pass:x"]) == ("openssl", "-pass", MARK)
    # python -u is unbuffered: what follows is the script.
    assert redact_argv(["python", "-u", "t.py"]) == ("python", "-u", "t.py")


def test_argv_ml_flags_survive() -> None:
    argv = ["gen.py", "--max-tokens", "512", "--pad-token", "[PAD]", "--tokenizer", "gpt2"]
    assert redact_argv(argv) == tuple(argv)


def test_argv_secret_flag_at_end_and_negative_values() -> None:
    assert redact_argv(["x", "--token"]) == ("x", "--token")
    assert redact_argv(["x", "--key", "-5"]) == ("x", "--key", MARK)
    assert redact_argv(["x", "--key", "-"]) == ("x", "--key", MARK)


def test_redact_env_by_name_then_by_value() -> None:
    env = {
        "HF_TOKEN": "plain-looking",
        "PWD": "/work/repo",
        "DATABASE_URL": "postgres://app:s3cret@db/prod",
        "GIT_ASKPASS": "/usr/bin/ssh-askpass",  # a program, though it says PASS
        "SOME_SETTING": GITHUB_PAT,
        "PATH": "/usr/bin",
    }
    assert redact_env(env) == {
        "HF_TOKEN": MARK,
        "PWD": "/work/repo",
        "DATABASE_URL": f"postgres://app:{MARK}@db/prod",
        "GIT_ASKPASS": "/usr/bin/ssh-askpass",
        "SOME_SETTING": f"ghp_{MARK}",
        "PATH": "/usr/bin",
    }
