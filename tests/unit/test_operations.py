"""Operating it (issue 10), the parts without servers: decision lines read back, the
report's arithmetic, notification templates, metric names used by the shipped alert
rules and dashboard, config checks of the new keys."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from mailwarden import logs, metrics
from mailwarden.config import ConfigError, load_config
from mailwarden.notify import templates
from mailwarden.ops import report
from mailwarden.settings import Settings
from mailwarden.store.events import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@ninhbinh.gov.vn"


def line(action: str, rule: str, *, stage: str = "RCPT", sender: str = ALICE,
         rcpts: tuple[str, ...] = ("x@gmail.com",), article: str = "", daemon: str = "policyd",
         when: str = "2026-11-30 08:15:00,123") -> str:
    body = logs.decision_line(queue_id="4Q8Zl02Bv1z", action=action, stage=stage,
                              client_name="pc1", client_addr="10.0.0.1", rule=rule,
                              detail={"k": 'v "quoted"'}, sender=sender, recipients=rcpts,
                              article=article, reply="550 5.7.1 no")
    return f"{when} mailwarden/{daemon}[42]: WARNING: {body}"


@pytest.mark.parametrize("sender,rcpts", [
    pytest.param(ALICE, ("x@gmail.com",), id="plain"),
    pytest.param('we"ird\\x@ninhbinh.gov.vn', ("a@b.c", "d>e@f.g"), id="escaped"),
    pytest.param("", tuple(f"r{i}@gmail.com" for i in range(25)), id="more-than-20"),
    pytest.param("nguyễn@ninhbinh.gov.vn", ("ü@gmail.com",), id="non-ascii"),
])
def test_decision_line_reads_back(sender: str, rcpts: tuple[str, ...]) -> None:
    d = logs.parse_decision_line(line("reject", "account.locked", sender=sender, rcpts=rcpts,
                                      article="QD 162/2025/QD-UBND Dieu 7.1"))
    assert d is not None
    assert (d.daemon, d.queue_id, d.action, d.stage, d.rule) == \
        ("policyd", "4Q8Zl02Bv1z", "reject", "RCPT", "account.locked")
    assert d.sender == sender and d.article == "QD 162/2025/QD-UBND Dieu 7.1"
    assert d.recipients == rcpts[:logs.MAX_RECIPIENTS]
    assert d.more_recipients == max(0, len(rcpts) - logs.MAX_RECIPIENTS)


def test_other_lines_are_not_decisions() -> None:
    for text in ("Nov 30 08:00:00 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]",
                 "mailwarden/policyd[1]: statistics: requests=5",
                 "mailwarden/notifier[1]: notification sent event=1-0"):
        assert logs.parse_decision_line(text) is None


def test_syslog_time_stamps() -> None:
    d = logs.parse_decision_line("Nov 30 08:15:00 mx " + line("reject", "av.infected")
                                 .split(" ", 2)[2], year=2026)
    assert d is not None and d.when is not None


def test_report_counts() -> None:
    lines = [
        line("reject", "ratelimit.external_recipients", article="A 7.2.b"),
        line("reject", "account.locked", article="A 7.1"),
        line("reject", "account.locked", article="A 7.1", rcpts=("y@gmail.com",)),
        line("reject", "attachment.executable", stage="EOM", daemon="milter", sender="b@n",
             article="A 4.2"),
        line("defer", "av.unavailable", stage="EOM", daemon="milter", sender="c@n"),
        line("defer", "ratelimit.backend_error", sender="c@n"),
        line("accept-unscanned", "av.unavailable", stage="EOM", daemon="milter"),
        line("monitor", "forward.external_auto", stage="EOM", daemon="milter"),
        line("reject", "account.locked", when="2026-11-28 08:00:00,000"),  # out of period
        "2026-11-30 08:16:00,000 mailwarden/policyd[42]: INFO: listening on unix:/x",
    ]
    since = logs.line_time("2026-11-30 00:00:00", 2026)
    assert since is not None
    rep = report.build(report.read_decisions(lines, since, since + 86400), since,
                       since + 86400, top=3)
    rows = {r.rule: r for r in rep.rules()}
    assert (rows["account.locked"].reject, rows["account.locked"].article) == (2, "A 7.1")
    assert rows["ratelimit.external_recipients"].reject == 1
    assert rows["av.unavailable"].defer == 1 and rows["forward.external_auto"].monitor == 1
    assert rep.tempfails == {"clamd": 1, "redis": 1}
    assert rep.unchecked == {"clamd": 1}
    # An outage is not the sender's fault: c@n is not a "top refused sender".
    assert rep.top_senders == [(ALICE, 3), ("b@n", 1)]
    assert rep.top_recipients[0] == ("x@gmail.com", 3)
    assert rep.decisions == 8 and len(rep.hourly) == 1
    text = report.text(rep)
    assert "account.locked" in text and "clamd     1" in text
    html = report.to_html(rep)
    assert html.count("<svg") == 3 and "<script" not in html
    assert json.loads(report.to_json(rep))["by_rule"][0]["rule"] == "account.locked"


def _settings(**over: object) -> Settings:
    return Settings.from_config(load_config(None, dict(over)))


def test_lock_templates_render_vietnamese_first_with_article_and_contact() -> None:
    s = _settings(**{"ratelimit.overrides": {ALICE: {"limit": 5}}})
    ev = AuditEvent("1796000000000-0", {"action": "lock", "account": ALICE, "kind": "rate",
                                        "by": "policyd", "count": "6",
                                        "reason": "over 5 external recipients in 10m"})
    vals = templates.values(ev, s.notifier, s.rate)
    out = templates.render(templates.pick(templates.shipped_dir(), ev, "rate"), vals)
    assert ALICE in out.subject and "\n" not in out.subject
    assert out.body.index("Kính gửi") < out.body.index("Dear owner")
    assert "tới 6" in out.body and "giới hạn 5" in out.body
    assert "QD 162/2025/QD-UBND Dieu 7.2.b" in out.body
    assert "QD 162/2025/QD-UBND Dieu 7.3" in out.body
    assert s.rate.contact in out.body and "{" not in out.body
    manual = AuditEvent("1796000000000-1", {"action": "lock", "account": ALICE,
                                            "kind": "manual", "by": "ops1",
                                            "reason": "leaked\npassword"})
    out = templates.render(templates.pick(templates.shipped_dir(), manual, "manual"),
                           templates.values(manual, s.notifier, s.rate))
    assert "leaked password" in out.body and "Dieu 7.2" in out.body and "ops1" in out.body
    templates.check(templates.shipped_dir())


def test_template_typos_stay_visible(tmp_path: Path) -> None:
    (tmp_path / "unlock.txt").write_text("Subject: {account} {nope}\n\nHi {account} {{x}}\n")
    ev = AuditEvent("1-0", {"action": "unlock", "account": ALICE})
    out = templates.render(templates.pick(tmp_path, ev, ""), {"account": ALICE})
    assert out.subject == f"{ALICE} {{nope}}" and out.body == f"Hi {ALICE} {{x}}\n"
    (tmp_path / "unlock.txt").write_text("From: evil\n\nbody\n")
    with pytest.raises(templates.TemplateError):
        templates.render(tmp_path / "unlock.txt", {})


@pytest.mark.parametrize("value", ["inet:10.0.0.1:9431", "unix:/run/x.sock",
                                   "inet:0.0.0.0:9431"])
def test_metrics_listen_must_be_loopback_inet(value: str) -> None:
    with pytest.raises(ConfigError, match=r"policyd\.metrics_listen"):
        load_config(None, {"policyd.metrics_listen": value})


def test_metrics_listen_accepts_loopback_and_empty() -> None:
    for v in ("", "inet:127.0.0.1:9431", "inet:[::1]:9431", "inet:localhost:9431"):
        assert _settings(**{"milter.metrics_listen": v}).milter.metrics_listen == v


def _defined_metrics() -> set[str]:
    tree = ast.parse(Path(metrics.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.right, ast.Constant) and \
                ast.unparse(node.left) == "PREFIX":
            names.add(metrics.PREFIX + str(node.right.value))
    return names


def test_alert_rules_and_dashboard_use_defined_metrics() -> None:
    defined = _defined_metrics()
    assert "mailwarden_decisions" in defined and len(defined) >= 15
    used = set()
    for path in [*(ROOT / "conf" / "prometheus").glob("*.yml"),
                 ROOT / "conf" / "grafana" / "mailwarden-dashboard.json"]:
        used |= set(re.findall(r"\bmailwarden_[a-z_]+", path.read_text()))
    json.loads((ROOT / "conf" / "grafana" / "mailwarden-dashboard.json").read_text())
    unknown = {u for u in used
               if re.sub(r"_(total|bucket|count|sum)$", "", u) not in defined
               and u not in ("mailwarden_alerts",)}
    assert not unknown, unknown


def test_metric_labels_are_bounded() -> None:
    assert metrics._rule("alice@ninhbinh.gov.vn") == "other"
    assert metrics._rule("account.locked") == "account.locked"
    assert set(metrics.RULE_BACKEND.values()) <= set(metrics.BACKENDS)
