"""Shared helpers for the deployment tests: the shipped rule/dashboard files, their PromQL and SQL, and a
real Prometheus server in a subprocess.

The expressions are read from the files under ``collector-config/`` and ``grafana/`` exactly as shipped;
``dashboard_promql()`` substitutes Grafana variables the way Grafana would for "All" (regex ``.*``)
and fixed windows for the interval macros.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers import REPO_ROOT, free_port

COLLECTOR_DIR = REPO_ROOT / "collector-config"
GRAFANA_DIR = REPO_ROOT / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
RULES_FILE = COLLECTOR_DIR / "alert-rules.yml"
RULE_TESTS_FILE = COLLECTOR_DIR / "alert-rules.test.yml"

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
AMTOOL = shutil.which("amtool")

#: Grafana's built-in interval macros, as the live test evaluates them (scrape interval 1 s).
GRAFANA_MACROS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


def has_prometheus() -> bool:
    return Path(PROMTOOL).exists() and Path(PROMETHEUS).exists()


def load_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alert-rules.yml (alerting and recording), in file order."""
    return [rule for group in load_yaml(RULES_FILE)["groups"] for rule in group["rules"]]


def dashboards() -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def datasource_uid(ref: Any) -> str | None:
    if isinstance(ref, dict):
        return ref.get("uid")
    return ref if isinstance(ref, str) else None


@dataclass(frozen=True)
class Query:
    """One query of one dashboard panel (or template variable)."""

    dashboard: str
    panel: str
    text: str
    datasource: str | None

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.text}"


def dashboard_queries() -> list[Query]:
    """Every panel target and every query variable of every dashboard."""
    found: list[Query] = []
    for dash in dashboards().values():
        uid = dash["uid"]
        for panel in iter_panels(dash.get("panels", [])):
            panel_ds = datasource_uid(panel.get("datasource"))
            for target in panel.get("targets", []):
                text = target.get("expr") or target.get("rawSql")
                if text:
                    ds = datasource_uid(target.get("datasource")) or panel_ds
                    found.append(Query(uid, panel.get("title", ""), text, ds))
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                query = var.get("query")
                text = query.get("query") if isinstance(query, dict) else query
                found.append(Query(uid, f"${var['name']}", text, datasource_uid(var.get("datasource"))))
    return found


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute_promql(expr: str) -> str:
    """A dashboard expression as Grafana sends it with every variable on "All" (``.*``)."""
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return _VARIABLE.sub(".*", expr)


def dashboard_promql() -> list[tuple[Query, str]]:
    """(query, PromQL to send) for every Prometheus query of every dashboard; ``label_values(sel, l)``
    variables become their series selector ``sel``."""
    out = []
    for query in dashboard_queries():
        if query.datasource != "prometheus":
            continue
        text = query.text
        match = _LABEL_VALUES.match(text)
        if match:
            text = match.group("selector")
        out.append((query, substitute_promql(text)))
    return out


# --- splitting alert expressions ------------------------------------------------------------------

_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPS = ("and", "unless")
_MODIFIER = re.compile(
    r"^\s*(?:bool\s+)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:(?:group_left|group_right)\s*(?:\([^)]*\))?\s*)?"
)


def _operator_at(expr: str, i: int) -> str | None:
    for op in _COMPARISONS:
        if expr.startswith(op, i):
            return op
    for op in _SET_OPS:
        before = expr[i - 1] if i else " "
        after = expr[i + len(op)] if i + len(op) < len(expr) else " "
        if expr.startswith(op, i) and not (before.isalnum() or before == "_") \
                and not (after.isalnum() or after == "_"):
            return op
    return None


def _top_level_tokens(expr: str) -> Iterator[tuple[int, str]]:
    """(index, operator) of the binary comparison and set operators outside brackets and strings."""
    depth, i, quote = 0, 0, ""
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            op = _operator_at(expr, i)
            if op is not None:
                yield i, op
                i += len(op)
                continue
        i += 1


def split_alert_expr(expr: str) -> list[str]:
    """The non-constant operands of an alert expression's top-level ``and``/``unless`` and comparisons.

    ``A > on (x) B and C > 0.1`` gives ``[A, B, C]``: the value each condition compares, and the
    limit when it is a query (e.g. an ``e2e_otel_threshold_value`` selector) rather than a number.
    """
    parts, start = [], 0
    for index, op in _top_level_tokens(expr):
        if op in _SET_OPS:
            parts.append(expr[start:index])
            start = index + len(op)
    parts.append(expr[start:])
    operands = []
    for part in parts:
        cuts = [(i, op) for i, op in _top_level_tokens(part) if op in _COMPARISONS]
        if not cuts:
            operands.append(part.strip())
            continue
        index, op = cuts[0]
        left, right = part[:index], part[index + len(op):]
        right = _MODIFIER.sub("", right, count=1)
        operands.append(left.strip())
        try:
            float(right.strip())
        except ValueError:
            operands.append(right.strip())
    return [o for o in operands if o]


def metric_names(expr: str) -> set[str]:
    """The e2e-otel metric names (and ``up``) an expression reads."""
    names = set(re.findall(r"\b(e2e_otel_[a-z0-9_]+)\b", expr))
    if re.search(r"\bup\s*\{", expr):
        names.add("up")
    return names


# --- a real Prometheus -----------------------------------------------------------------------------

class PrometheusServer:
    """``/usr/bin/prometheus`` on a free port with a temporary TSDB; use as a context manager.

    Runs in its own process group; ``stop()`` (always called on exit) terminates it, then kills it.
    """

    def __init__(self, config: dict[str, Any], *, rule_files: list[Path] = ()) -> None:  # type: ignore[assignment]
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="e2e-prometheus-"))
        for rule_file in rule_files:
            shutil.copy(rule_file, self._dir / rule_file.name)
        config = dict(config)
        if rule_files:
            config["rule_files"] = [p.name for p in rule_files]
        self.config_path = self._dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self._dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> PrometheusServer:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config_path}", f"--storage.tsdb.path={self._dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET ``/api/v1/<path>``; the decoded JSON body, also for 4xx answers (PromQL errors)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def targets_up(self) -> list[dict[str, Any]]:
        return [t for t in self.api("targets")["data"]["activeTargets"] if t["health"] == "up"]
