"""Tests for e2e_otel.sanitize: key rules, structure bounds, free-text secrets, SQL literals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from e2e_otel.sanitize import (
    DEFAULT_SENSITIVE_KEYS,
    MASK,
    MAX_SQL_LENGTH,
    TRUNCATION_MARKER,
    Sanitizer,
    default_sanitizer,
    scrub_sql,
    sql_fingerprint,
    sql_operation_and_table,
)


@pytest.fixture(scope="module")
def sanitizer() -> Sanitizer:
    return Sanitizer()


# --- keys ------------------------------------------------------------------------------------------

SENSITIVE_KEYS = [
    "password", "PASSWORD", "user_password", "userPassword", "old-password", "passwd", "db_pwd",
    "secret", "client_secret", "clientSecret", "SECRET_KEY", "clientsecret",
    "token", "access_token", "refreshToken", "auth_token", "x-auth-token", "passwords", "secrets",
    "token_count", "gen_ai.usage.input_tokens",  # counts: masked on purpose, see the module docstring
    "api_key", "apiKey", "APIKey", "X-Api-Key", "x-apikey", "http.request.header.x_api_key",
    "authorization", "Authorization", "http.request.header.authorization", "HTTP_AUTHORIZATION",
    "Proxy-Authorization",
    "cookie", "Cookie", "COOKIES", "http.request.header.cookie", "HTTP_COOKIE", "Set-Cookie",
    "http.response.header.set_cookie", "fortunecookie",
    "session", "sessionid", "session_key", "session_token_id", "PHPSESSID", "JSESSIONID",
    "csrf", "csrftoken", "csrfmiddlewaretoken", "X-CSRFToken", "CSRF_COOKIE_NAME",
    "credit_card", "creditCard", "creditcard", "creditCardNumber", "card_number", "cc_number",
    "cvv", "card.cvv", "pan", "card.pan", "PAN", "ssn", "user.ssn",
    "private_key", "privateKey", "aws_access_key_id", "accessKey",
]

HARMLESS_KEYS = [
    "span_id", "parent_span_id", "spanId", "company", "companyName", "panel", "japan", "expand",
    "db.system", "db.name", "http.route", "http.method", "url.full", "process.pid",
    "workflow_session_id", "session_id", "session.id", "sessionId", "session.previous_id",
    "sessions.id", "cache_key", "idempotency_key", "key", "acc_number", "cwd", "keyboard", "author",
    "user.name", "tokenizer", "passwordless", "",
]


@pytest.mark.parametrize("key", SENSITIVE_KEYS)
def test_sensitive_keys_are_recognised(sanitizer: Sanitizer, key: str) -> None:
    assert sanitizer.is_sensitive_key(key)


@pytest.mark.parametrize("key", HARMLESS_KEYS)
def test_harmless_keys_are_kept(sanitizer: Sanitizer, key: str) -> None:
    assert not sanitizer.is_sensitive_key(key)


def test_every_default_word_is_sensitive_by_itself(sanitizer: Sanitizer) -> None:
    for word in DEFAULT_SENSITIVE_KEYS:
        assert sanitizer.is_sensitive_key(word), word
        assert sanitizer.is_sensitive_key(word.upper()), word
        assert sanitizer.is_sensitive_key(f"http.request.header.{word}"), word


def test_extra_keys_use_the_same_token_rules() -> None:
    custom = Sanitizer(extra_keys=["pin", "X-Internal-Signature"])
    assert custom.is_sensitive_key("user.pin")
    assert custom.is_sensitive_key("PIN")
    assert not custom.is_sensitive_key("pinned")  # short word: whole tokens only
    assert not custom.is_sensitive_key("spin")
    assert custom.is_sensitive_key("x_internal_signature")
    assert custom.is_sensitive_key("http.request.header.x-internal-signature")
    assert custom.is_sensitive_key("password")  # defaults stay
    assert not Sanitizer().is_sensitive_key("user.pin")


def test_repeated_lookups_give_the_same_answer(sanitizer: Sanitizer) -> None:
    assert [sanitizer.is_sensitive_key("apiKey") for _ in range(3)] == [True, True, True]
    assert [sanitizer.is_sensitive_key("span_id") for _ in range(3)] == [False, False, False]


def test_constructor_validates_its_options() -> None:
    with pytest.raises(TypeError, match="'password'"):
        Sanitizer(extra_keys="password")
    for option in ("max_string_length", "max_depth", "max_items"):
        with pytest.raises(ValueError, match=option):
            Sanitizer(**{option: 0})
    with pytest.raises(ValueError, match="max_items"):
        Sanitizer(max_items=True)


def test_default_sanitizer_is_one_shared_instance() -> None:
    assert default_sanitizer() is default_sanitizer()
    assert default_sanitizer().enabled
    assert default_sanitizer().is_sensitive_key("password")


def test_module_imports_no_django() -> None:
    code = "import sys, e2e_otel.sanitize; sys.exit(any(m.split('.')[0] == 'django' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- clean_mapping ---------------------------------------------------------------------------------


def test_clean_mapping_masks_sensitive_values_of_any_type(sanitizer: Sanitizer) -> None:
    data = {
        "http.route": "/login/",
        "http.status_code": 401,
        "span_id": "00f067aa0ba902b7",
        "workflow_session_id": "f81d4fae",
        "user_password": "hunter2",
        "cvv": 123,
        "checkout": None,
        "http.request.header.authorization": ("Bearer abc",),
        "session": {"user": 1},
        "ok": True,
        "ratio": 0.5,
    }
    assert sanitizer.clean_mapping(data) == {
        "http.route": "/login/",
        "http.status_code": 401,
        "span_id": "00f067aa0ba902b7",
        "workflow_session_id": "f81d4fae",
        "user_password": MASK,
        "cvv": MASK,
        "checkout": None,
        "http.request.header.authorization": MASK,
        "session": MASK,
        "ok": True,
        "ratio": 0.5,
    }


def test_clean_mapping_recurses_and_keeps_container_types(sanitizer: Sanitizer) -> None:
    data = {
        "request": {
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"},
            "params": [{"password": "p1", "q": "shoes"}, ("token", "not-a-key")],
            "tags": {"only"},
        },
        "message": "login failed: password=hunter2 for bob",
    }
    assert sanitizer.clean_mapping(data) == {
        "request": {
            "headers": {"Authorization": MASK, "Accept": "application/json"},
            "params": [{"password": MASK, "q": "shoes"}, ("token", "not-a-key")],
            "tags": ["only"],
        },
        "message": f"login failed: password={MASK} for bob",
    }


def test_clean_mapping_does_not_modify_its_input(sanitizer: Sanitizer) -> None:
    data = {"password": "x", "nested": {"token": "y"}, "items": ["a"]}
    sanitizer.clean_mapping(data)
    assert data == {"password": "x", "nested": {"token": "y"}, "items": ["a"]}


def test_clean_mapping_bounds_depth() -> None:
    limited = Sanitizer(max_depth=3)
    data: dict[str, object] = {"leaf": "end"}
    for level in range(10):
        data = {f"level{level}": data, "list": [[[["deep"]]]]}
    cleaned = limited.clean_mapping(data)
    assert cleaned["list"] == [["[max depth]"]]
    second = cleaned["level9"]
    assert isinstance(second, dict)
    third = second["level8"]
    assert isinstance(third, dict)
    assert third["level7"] == "[max depth]"


def test_clean_mapping_survives_self_reference(sanitizer: Sanitizer) -> None:
    loop: dict[str, object] = {"name": "loop"}
    loop["self"] = loop
    items: list[object] = []
    items.append(items)
    cleaned = sanitizer.clean_mapping({"loop": loop, "items": items})
    assert cleaned["loop"]["name"] == "loop"


def test_clean_mapping_bounds_item_counts() -> None:
    limited = Sanitizer(max_items=5)
    cleaned = limited.clean_mapping({"big": {str(i): i for i in range(12)}, "seq": list(range(12))})
    assert cleaned["big"] == {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "[truncated]": "7 more items"}
    assert cleaned["seq"] == [0, 1, 2, 3, 4]
    assert len(Sanitizer().clean_mapping({str(i): i for i in range(500)})) == 128 + 1


def test_clean_mapping_truncates_long_strings() -> None:
    cleaned = Sanitizer(max_string_length=10).clean_mapping({"body": "x" * 50, "short": "abc"})
    assert cleaned == {"body": "x" * 10 + TRUNCATION_MARKER, "short": "abc"}
    default = Sanitizer().clean_mapping({"body": "y" * 10_000})["body"]
    assert default == "y" * 4096 + TRUNCATION_MARKER


def test_clean_mapping_renders_bytes_and_objects_as_scrubbed_text(sanitizer: Sanitizer) -> None:
    class Credentials:
        def __str__(self) -> str:
            return "Credentials(user='bob', password='hunter2')"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    data = {"body": b"api_key=abc123&page=2", "obj": Credentials(), "bad": Broken()}
    cleaned = sanitizer.clean_mapping(data)
    assert cleaned == {
        "body": f"api_key={MASK}&page=2",
        "obj": f"Credentials(user='bob', password='{MASK}')",
        "bad": "<unrepresentable>",
    }


def test_disabled_sanitizer_bounds_but_does_not_mask() -> None:
    off = Sanitizer(enabled=False, max_string_length=20, max_items=3)
    data = {"password": "hunter2", "message": "token=abc", "long": "z" * 30, "a": 1, "b": 2}
    assert off.clean_mapping(data) == {
        "password": "hunter2",
        "message": "token=abc",
        "long": "z" * 20 + TRUNCATION_MARKER,
        "[truncated]": "2 more items",
    }
    assert off.scrub_text("password=hunter2") == "password=hunter2"
    assert off.scrub_text("q" * 25) == "q" * 20 + TRUNCATION_MARKER


# --- scrub_text ------------------------------------------------------------------------------------

TEXT_CASES = [
    ("login failed: password=hunter2&user=bob", f"login failed: password={MASK}&user=bob"),
    ("password = 'hunter2'", f"password = '{MASK}'"),
    ('payload {"password": "hunter2", "user": "bob"}', f'payload {{"password": "{MASK}", "user": "bob"}}'),
    ("{'user': 'bob', 'api_key': 'k-123'}", f"{{'user': 'bob', 'api_key': '{MASK}'}}"),
    ('body "{\\"token\\": \\"t0k\\", \\"n\\": 1}"', f'body "{{\\"token\\": \\"{MASK}\\", \\"n\\": 1}}"'),
    ("token: abc123 expired", f"token: {MASK} expired"),
    ("refresh_token=abc; path=/", f"refresh_token={MASK}; path=/"),
    ("GET /search?q=shoes&api_key=SECRET123&page=2", f"GET /search?q=shoes&api_key={MASK}&page=2"),
    ("https://shop.example/cb?apiKey=xyz", f"https://shop.example/cb?apiKey={MASK}"),
    ("Authorization: Bearer abc.def-ghi\nAccept: */*", f"Authorization: {MASK}\nAccept: */*"),
    ("http.request.header.authorization=Bearer abc", f"http.request.header.authorization={MASK}"),
    ("'Authorization': 'Basic dXNlcjpwYXNz', 'Accept': 'json'",
     f"'Authorization': '{MASK}', 'Accept': 'json'"),
    ("upstream sent Bearer eyJraWQiOiJ4In0 back", f"upstream sent Bearer {MASK} back"),
    ("retry with Basic dXNlcjpwYXNz", f"retry with Basic {MASK}"),
    ("Cookie: sessionid=abc; csrftoken=xyz; theme=dark", f"Cookie: {MASK}"),
    ("< Set-Cookie: sessionid=abc; Path=/; HttpOnly\n< Vary: Cookie",
     f"< Set-Cookie: {MASK}\n< Vary: Cookie"),
    ("HTTP_COOKIE: a=b; c=d", f"HTTP_COOKIE: {MASK}"),
    ("sessionid=abcdef; theme=dark", f"sessionid={MASK}; theme=dark"),
    ("csrfmiddlewaretoken=Zx9&next=/", f"csrfmiddlewaretoken={MASK}&next=/"),
    ("X-Api-Key: 0123456789abcdef", f"X-Api-Key: {MASK}"),
    ("if password == 'hunter2':", f"if password == '{MASK}':"),
    ("password='unterminated", f"password='{MASK}"),
    ("password=b'bytes'", f"password=b'{MASK}'"),
    ("x=1;token=abc;password=def", f"x=1;token={MASK};password={MASK}"),
    ("mysql://root:s3cr3t@db:3306/app", f"mysql://root:{MASK}@db:3306/app"),
    ("redis://:pa55@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
    ("https://user:p@ss@host/x", f"https://user:{MASK}@host/x"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nafter", f"{MASK}\nafter"),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_scrub_text_masks_inline_secrets(sanitizer: Sanitizer, text: str, expected: str) -> None:
    assert sanitizer.scrub_text(text) == expected


@pytest.mark.parametrize("text", [
    "GET /api/products/?page=2&ordering=-price",
    "span_id=00f067aa0ba902b7 company=acme panel=left workflow_session_id=42 session_id=7",
    "Traceback (most recent call last):\n  File \"views.py\", line 12, in get\nKeyError: 'sku'",
    "Basic functionality works; basic auth is off",
    "http://host:8080/path@v2 and user@example.com",
    "order 3141592653589793 at 1700000000000 id 4111111111111112",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 uuid 550e8400-e29b-41d4-a716-446655440000",
    "tokenizer=bpe passwordless=true",
    "",
])
def test_scrub_text_leaves_harmless_text_alone(sanitizer: Sanitizer, text: str) -> None:
    assert sanitizer.scrub_text(text) == text


def test_scrub_text_masks_secrets_in_a_python_traceback(sanitizer: Sanitizer) -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/shop/views.py", line 42, in login\n'
        "    user = authenticate(request, username='bob', password='hunter2')\n"
        '  File "/app/shop/backends.py", line 9, in authenticate\n'
        "    raise LoginError(Credentials(username='bob', password='hunter2', api_key='k-9'))\n"
        "shop.errors.LoginError: bad credentials {'password': 'hunter2', 'next': '/cart/'}\n"
    )
    scrubbed = sanitizer.scrub_text(traceback)
    assert "hunter2" not in scrubbed
    assert "k-9" not in scrubbed
    assert f"password='{MASK}'" in scrubbed
    assert "username='bob'" in scrubbed
    assert "'next': '/cart/'" in scrubbed
    assert 'File "/app/shop/views.py", line 42, in login' in scrubbed


@pytest.mark.parametrize("card", [
    "4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444",
    "378282246310005", "6011111111111117", "4000 0566 5566 5556",
])
def test_scrub_text_masks_luhn_valid_card_numbers(sanitizer: Sanitizer, card: str) -> None:
    assert sanitizer.scrub_text(f"charge failed for card {card}.") == f"charge failed for card {MASK}."


@pytest.mark.parametrize("number", [
    "4111111111111112",  # 16 digits, Luhn-invalid
    "3141592653589793",
    "1700000000000",  # epoch milliseconds
    "123456789012",  # too short
    "41111111111111111111",  # too long
    "x4111111111111111",  # part of a word
])
def test_scrub_text_keeps_ordinary_long_numbers(sanitizer: Sanitizer, number: str) -> None:
    assert sanitizer.scrub_text(f"id {number} done") == f"id {number} done"


def test_scrub_text_masks_jwts(sanitizer: Sanitizer) -> None:
    jwt = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
           ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
    assert sanitizer.scrub_text(f"bad jwt {jwt} rejected") == f"bad jwt {MASK} rejected"
    assert sanitizer.scrub_text(f"next={jwt}") == f"next={MASK}"


def test_scrub_text_is_idempotent(sanitizer: Sanitizer) -> None:
    for text, _ in TEXT_CASES:
        once = sanitizer.scrub_text(text)
        assert sanitizer.scrub_text(once) == once


def test_scrub_text_truncates_without_leaking_a_secret_across_the_limit() -> None:
    small = Sanitizer(max_string_length=100)
    text = "x" * 80 + " password=" + "h" * 500 + " tail"
    scrubbed = small.scrub_text(text)
    assert scrubbed.endswith(TRUNCATION_MARKER)
    assert len(scrubbed) == 100 + len(TRUNCATION_MARKER)
    assert "hh" not in scrubbed
    assert "password=[RED" in scrubbed


def test_scrub_text_masks_keys_of_extra_words() -> None:
    custom = Sanitizer(extra_keys=["pin"])
    assert custom.scrub_text("pin=1234 ok") == f"pin={MASK} ok"
    assert custom.scrub_text("spin=1234 ok") == "spin=1234 ok"


# --- SQL -------------------------------------------------------------------------------------------

SQL_CASES = [
    ("SELECT * FROM t WHERE name = 'it\\'s' AND x = 'a''b'", "SELECT * FROM t WHERE name = ? AND x = ?"),
    ('SELECT * FROM t WHERE a = "double" AND b = ""', "SELECT * FROM t WHERE a = ? AND b = ?"),
    ("SELECT * FROM t WHERE a LIKE'%x%'", "SELECT * FROM t WHERE a LIKE?"),
    ("UPDATE t SET a = -1, b = (-2.5), c = c-3, d = c - 4 WHERE e BETWEEN -4 AND 5",
     "UPDATE t SET a = ?, b = (?), c = c-?, d = c - ? WHERE e BETWEEN ? AND ?"),
    ("SELECT 3.14, .5, 10., 1.5e-3, 2E10, 0xFF, X'4A', x'4a', b'0101', 0b11, N'x', _utf8mb4'y'",
     "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT `t2`.`col3`, table1.id FROM `order_2024` t2 JOIN table1 ON t2.id = table1.t2_id",
     "SELECT `t2`.`col3`, table1.id FROM `order_2024` t2 JOIN table1 ON t2.id = table1.t2_id"),
    ("SELECT `2024` FROM `it's` WHERE a = 'secret'", "SELECT `2024` FROM `it's` WHERE a = ?"),
    ("SELECT * FROM t WHERE a = %s AND b = %(name)s AND c = ? AND d = :name AND e = @var1",
     "SELECT * FROM t WHERE a = %s AND b = %(name)s AND c = ? AND d = :name AND e = @var1"),
    ("SELECT 1 /*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/", "SELECT ?"),
    ("SELECT a -- filter on 'x'\nFROM b # comment 42\nWHERE c = 7", "SELECT a  \nFROM b  \nWHERE c = ?"),
    ("SELECT a FROM t WHERE id IN (1, 2, 3) AND k NOT IN ('a','b') AND j in(%s, %s, %s)",
     "SELECT a FROM t WHERE id IN (?) AND k NOT IN (?) AND j in(%s)"),
    ("SELECT a FROM t WHERE q IN (SELECT b FROM u WHERE c = 1) AND v = ROW(1, 2)",
     "SELECT a FROM t WHERE q IN (SELECT b FROM u WHERE c = ?) AND v = ROW(?, ?)"),
    ("INSERT INTO t (a, b) VALUES (%s, %s), (1, 'x')", "INSERT INTO t (a, b) VALUES (%s, %s), (?, ?)"),
    ("SELECT `shop_product`.`id` FROM `shop_product` WHERE `shop_product`.`id` = 5 LIMIT 21",
     "SELECT `shop_product`.`id` FROM `shop_product` WHERE `shop_product`.`id` = ? LIMIT ?"),
    ("SELECT 'unterminated secret", "SELECT ?"),
    ("SELECT 'ends with a backslash\\", "SELECT ?"),
    ("SELECT 1 /* unterminated 'secret'", "SELECT ?"),
]


@pytest.mark.parametrize(("sql", "expected"), SQL_CASES)
def test_scrub_sql(sql: str, expected: str) -> None:
    assert scrub_sql(sql) == expected


def test_scrub_sql_ignores_enabled_and_accepts_bytes() -> None:
    off = Sanitizer(enabled=False)
    assert off.scrub_sql("SELECT * FROM t WHERE pw = 'hunter2'") == "SELECT * FROM t WHERE pw = ?"
    assert off.scrub_sql(b"SELECT 42") == "SELECT ?"


@pytest.mark.parametrize("template", [
    "SELECT * FROM t WHERE a = {}", "SELECT * FROM t WHERE a IN ({}, {})", "UPDATE t SET a={} WHERE b=1",
    "SELECT CONCAT({}, 'x')", "SELECT {} /* x */", "SELECT * FROM t WHERE `a`={}",
])
@pytest.mark.parametrize(
    "secret", ["'hunter2'", '"hunter2"', "'hun\\'ter2'", "'hun''ter2'", "_latin1'hunter2'"]
)
def test_scrub_sql_never_lets_a_string_literal_through(template: str, secret: str) -> None:
    scrubbed = scrub_sql(template.format(secret, secret))
    assert "hunter2" not in scrubbed and "ter2" not in scrubbed


def test_scrub_sql_caps_the_input_without_leaking_a_cut_literal() -> None:
    sql = "SELECT " + "c" * (MAX_SQL_LENGTH - 12) + " = 'my secret value'"
    scrubbed = scrub_sql(sql)
    assert scrubbed.endswith(TRUNCATION_MARKER)
    assert "my" not in scrubbed and "secret" not in scrubbed
    assert len(scrubbed) <= MAX_SQL_LENGTH + len(TRUNCATION_MARKER) + 1


def test_sql_fingerprint_groups_queries_of_the_same_shape() -> None:
    first = sql_fingerprint("SELECT * FROM `shop_product` WHERE `id` = 1 AND `sku` IN ('a', 'b') LIMIT 21")
    second = sql_fingerprint(
        "SELECT *  FROM `shop_product`\n WHERE `id` = 9876 AND `sku` IN ('z') LIMIT 21 "
        "/*traceparent='00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'*/"
    )
    assert first == second == "SELECT * FROM `shop_product` WHERE `id` = ? AND `sku` IN (?) LIMIT ?"
    assert sql_fingerprint("SELECT * FROM `shop_product` WHERE `name` = 'x'") != first
    assert sql_fingerprint("SELECT a FROM t;") == sql_fingerprint("SELECT a FROM t")
    assert Sanitizer().sql_fingerprint("SELECT 1") == sql_fingerprint("SELECT 2")


@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT `shop_product`.`id`, `shop_product`.`name` FROM `shop_product` WHERE `shop_product`.`id` = %s",
     ("SELECT", "shop_product")),
    ("INSERT INTO `auth_user` (`password`, `username`) VALUES (%s, %s)", ("INSERT", "auth_user")),
    ("insert ignore into shop.orders values (1)", ("INSERT", "shop.orders")),
    ("REPLACE INTO `x` (a) VALUES (1)", ("REPLACE", "x")),
    ("UPDATE LOW_PRIORITY `shop_product` SET `stock` = `stock` - 1", ("UPDATE", "shop_product")),
    ("DELETE FROM `django_session` WHERE `expire_date` < %s", ("DELETE", "django_session")),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a", ("DELETE", "t1")),
    ("/* leading */ -- comment\n  select EXTRACT(YEAR FROM `created`) FROM `shop`.`order` o",
     ("SELECT", "shop.order")),
    ('SELECT * FROM "ansi_table"', ("SELECT", "ansi_table")),
    ("SELECT `from`, 'FROM x' FROM `real`", ("SELECT", "real")),
    ("SELECT COUNT(*) FROM (SELECT id FROM shop_product WHERE x) sub", ("SELECT", "shop_product")),
    ("(SELECT a FROM t1) UNION (SELECT a FROM t2)", ("SELECT", "t1")),
    ("WITH recent AS (SELECT * FROM shop_order WHERE d > 1) SELECT * FROM recent", ("SELECT", "shop_order")),
    ("WITH RECURSIVE c (n) AS (SELECT 1), d AS (SELECT 2) SELECT * FROM real_table JOIN c",
     ("SELECT", "real_table")),
    ("SELECT 1", ("SELECT", None)),
    ("SELECT 1 FROM DUAL", ("SELECT", None)),
    ("SET NAMES utf8mb4", ("SET", None)),
    ("begin", ("BEGIN", None)),
    ("SAVEPOINT `s1`", ("SAVEPOINT", None)),
    ("", ("", None)),
    ("  /* only a comment */ ", ("", None)),
])
def test_sql_operation_and_table(sql: str, expected: tuple[str, str | None]) -> None:
    assert sql_operation_and_table(sql) == expected
    assert Sanitizer().sql_operation_and_table(sql) == expected


# --- pathological input ----------------------------------------------------------------------------
# Inputs that make naive patterns backtrack for minutes (nested or overlapping repetitions that
# fail at the end). Each must simply return; pytest's durations show how long they took.

PATHOLOGICAL_TEXT = [
    "a=" * 3000, "password=" * 600, "password" * 600, "'password': '" * 400, "\\\"" * 3000,
    "4 " * 3000, "4" * 5000, "4-" * 3000, "eyJ" * 2000, "eyJaaaaa." * 600, "://" * 2000, "://a:" * 1200,
    "-----BEGIN PRIVATE KEY-----" * 200, "Bearer " * 900, "basic " * 900, "Cookie:" * 800,
    "x" * 5000 + "=", "a.b-c_d" * 800 + ":", "token" * 1200, "span " * 1200, " " * 5000 + "password",
]
PATHOLOGICAL_SQL = [
    "(" * 8000, "'" * 8001, "\\" * 8000, "-- " * 2700, "/*" * 4000, "`" * 8001, "1" * 8000 + "x",
    "-" * 8000, "- " * 4000 + "1", "SELECT * FROM t WHERE a IN (" + "?, " * 2600, "1." * 4000,
    "0x" * 4000, "1e" * 4000, "'a''" * 2000, "\"\\" * 4000, "WITH a AS (" * 700,
    "WITH " + "a AS (SELECT 1), " * 450 + "SELECT 1", "SELECT " + "(" * 3000 + "FROM", "-- -- -- \n" * 800,
    "in (" * 2000, "`a` " * 2000, "SELECT -" + " " * 8000 + "1",
]


@pytest.mark.parametrize("text", PATHOLOGICAL_TEXT, ids=lambda t: repr(t[:12]))
def test_pathological_text_returns(sanitizer: Sanitizer, text: str) -> None:
    assert isinstance(sanitizer.scrub_text(text), str)
    assert isinstance(sanitizer.is_sensitive_key(text[:300]), bool)


@pytest.mark.parametrize("sql", PATHOLOGICAL_SQL, ids=lambda s: repr(s[:12]))
def test_pathological_sql_returns(sql: str) -> None:
    assert isinstance(scrub_sql(sql), str)
    assert isinstance(sql_fingerprint(sql), str)
    operation, _ = sql_operation_and_table(sql)
    assert isinstance(operation, str)


def test_ansi_quoting_keeps_double_quoted_names_for_sqlite_and_postgresql() -> None:
    from e2e_otel.sanitize import ansi_quotes_for, scrub_sql

    sql = 'SELECT "shop"."id" FROM "shop" WHERE "shop"."name" = \'hunter2\' AND "shop"."n" > 42'
    assert scrub_sql(sql, ansi_quotes=True) == (
        'SELECT "shop"."id" FROM "shop" WHERE "shop"."name" = ? AND "shop"."n" > ?'
    )
    assert "shop" not in scrub_sql(sql)  # MySQL default mode: "..." is a string literal
    assert [ansi_quotes_for(s) for s in ("sqlite", "postgresql", "mysql", "MariaDB", None)] == [
        True, True, False, False, False]


def test_sql_memo_is_bounded_and_never_changes_an_answer() -> None:
    from e2e_otel.sanitize import MEMO_SIZE, SQL_MEMO_MAX_CHARS, Sanitizer, scrub_sql

    sanitizer = Sanitizer()
    for i in range(MEMO_SIZE + 20):
        statement = f"SELECT * FROM t WHERE password = 'pw{i}' AND id = {i}"
        for ansi in (False, True):
            assert sanitizer.scrub_sql(statement, ansi_quotes=ansi) == scrub_sql(statement, ansi_quotes=ansi)
    assert sanitizer._scrub_sql_memo.cache_info().currsize == MEMO_SIZE
    quoted = 'SELECT "name" FROM t'
    assert sanitizer.scrub_sql(quoted, ansi_quotes=True) != sanitizer.scrub_sql(quoted)  # keyed on quoting too
    before = sanitizer._scrub_sql_memo.cache_info()
    huge = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'x')" for i in range(SQL_MEMO_MAX_CHARS // 8))
    assert sanitizer.scrub_sql(huge) == scrub_sql(huge)
    assert sanitizer.scrub_sql(b"SELECT 1") == scrub_sql(b"SELECT 1")
    after = sanitizer._scrub_sql_memo.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)
