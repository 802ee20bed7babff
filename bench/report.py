"""Writes target/bench/report.json and report.md from one `make bench` run: the engine benchmark's divan table
(engine.txt) and the orchestrator's measurements.json. Every figure is taken from those two files; this script
only divides, compares with issue 9's targets and lays the result out.

usage: report.py DIR   (DIR holds engine.txt and measurements.json)"""

import json
import re
import sys
from pathlib import Path

UNITS_NS = {"ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
TREE = "│├╰─ "


def parse_divan(text: str) -> dict:
    """divan's table → {"group/arg": {"median_ns", "fastest_ns", "alloc_count", "alloc_bytes", "samples"}}.

    Each benchmark row is followed by a throughput row and by `max alloc:`, `alloc:`, `dealloc:`, `grow:` blocks
    (a count row, then a bytes row); only `alloc:` is read."""
    results, group, current, expect_alloc = {}, None, None, 0
    for line in text.splitlines():
        # The tree drawn on the left uses the column separator's character too.
        rest = line.lstrip(TREE)
        cells = rest.split("│")
        if len(cells) < 6:
            continue
        head = cells[0]
        row = re.match(r"^(\S+)\s+([\d.]+)\s*(ns|µs|us|ms|s)\s*$", head)
        if row:
            name = row.group(1)
            current = f"{group}/{name}" if group else name
            median = re.match(r"^\s*([\d.]+)\s*(ns|µs|us|ms|s)\s*$", cells[2])
            results[current] = {
                "fastest_ns": float(row.group(2)) * UNITS_NS[row.group(3)],
                "median_ns": float(median.group(1)) * UNITS_NS[median.group(2)] if median else None,
                "samples": int(cells[4].strip() or 0),
            }
            expect_alloc = 0
            continue
        if head.strip() == "alloc:":
            expect_alloc = 1
            continue
        if head.strip().endswith(":"):
            expect_alloc = 0
            continue
        if expect_alloc and current:
            value = cells[2].strip()
            if expect_alloc == 1:
                results[current]["alloc_count"] = float(value)
                expect_alloc = 2
            else:
                number, unit = re.match(r"^([\d.]+)\s*(\w+)$", value).groups()
                scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
                results[current]["alloc_bytes"] = float(number) * scale
                expect_alloc = 0
            continue
        name = head.strip()
        if re.match(r"^[A-Za-z_]\w*$", name) and not cells[1].strip():
            group = name
    return results


def ratio(a, b):
    return None if not a or not b else a / b


def fmt(x, digits=2):
    if x is None:
        return "n/a"
    if isinstance(x, float) and (x != x):
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and x >= 100):
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")
    m = json.loads((out / "measurements.json").read_text())
    divan = parse_divan((out / "engine.txt").read_text()) if (out / "engine.txt").exists() else {}
    settings = m["settings"]
    latency_ms = settings["latencyMs"]
    concurrency = settings["mailboxConcurrency"]
    page_size = settings["pageSize"]
    targets = []

    def target(name, measured, limit, unit, met, note=""):
        targets.append({"target": name, "measured": measured, "limit": limit, "unit": unit, "met": bool(met), "note": note})

    # ---- 1. engine
    engine = {}
    for key, r in divan.items():
        group, _, size = key.partition("/")
        if not size.isdigit():
            continue
        n = int(size)
        engine[key] = {
            "pageMessages": n,
            "nsPerMessage": r["median_ns"] / n if r.get("median_ns") else None,
            "allocsPerMessage": r["alloc_count"] / n if "alloc_count" in r else None,
            "allocBytesPerMessage": r["alloc_bytes"] / n if "alloc_bytes" in r else None,
            "medianPageNs": r.get("median_ns"),
            "samples": r.get("samples"),
        }
    worker_engine = engine.get(f"parse_and_match/{page_size}")
    if worker_engine:
        ns = worker_engine["nsPerMessage"]
        target("engine (parse + match) per message", ns / 1000, 2.0, "µs", ns <= 2000,
               f"{page_size}-message page, median of divan samples")
    else:
        target("engine (parse + match) per message", None, 2.0, "µs", False, "engine benchmark output missing")

    # ---- 6. side by side
    listings = {}
    for entry in m["listings"]:
        r = entry.get("report")
        if not r:
            continue
        per = r["loopCpuMs"] * 1000 / r["listed"] if r["listed"] else None
        listings[(r["client"], entry["mailbox"])] = dict(r, mailbox=entry["mailbox"], cpuUsPerMessage=per,
                                                        bytesPerMessage=(r["bytes"] / r["listed"]) if r["bytes"] and r["listed"] else None)
    small, large = settings["smallMailbox"], settings["largeMailbox"]
    rust_small = listings.get(("rust", small))
    plain_small = listings.get(("python-requests", small))
    sdk_small = listings.get(("python-msgraph-sdk", small))
    if rust_small and plain_small:
        r = ratio(rust_small["cpuUsPerMessage"], plain_small["cpuUsPerMessage"])
        target("worker CPU per listed message vs plain Python", r, 1 / 6, "ratio", r is not None and r <= 1 / 6,
               f"{rust_small['cpuUsPerMessage']:.2f} µs vs {plain_small['cpuUsPerMessage']:.2f} µs, {small:,} messages, same pages")
    if rust_small and sdk_small:
        r = ratio(rust_small["cpuUsPerMessage"], sdk_small["cpuUsPerMessage"])
        target("worker CPU per listed message vs msgraph-sdk", r, 1 / 2000, "ratio", r is not None and r <= 1 / 2000,
               f"{rust_small['cpuUsPerMessage']:.2f} µs vs {sdk_small['cpuUsPerMessage']:.0f} µs, {small:,} messages, same pages")

    wire = {w["mailbox"]: w for w in m.get("wire", [])}
    if rust_small:
        per = rust_small["bytesPerMessage"]
        w = wire.get(small)
        gz = w["gzipBytes"] / rust_small["listed"] if w else None
        target("bytes listed per discarded message", per, 800, "bytes", per is not None and per <= 800,
               f"decoded JSON of the worker's listing; {fmt(gz, 0)} bytes on the wire (gzip)")

    # ---- 2. imports
    imports = []
    for run in m["imports"]:
        s, g = run["summary"], run["graph"]
        cpu_ms = run["after"]["cpuMs"] - run["before"]["cpuMs"]
        mailbox_requests = g["listPages"] + g["fetches"] + g["folderRequests"] + g["other"]
        limit_parallel = mailbox_requests * latency_ms / concurrency
        limit_chain = g["longestFolderChain"] * latency_ms
        limit = max(limit_parallel, limit_chain)
        # Each serial $batch holds one slot for its own round trip too.
        with_batch_trips = limit_parallel + g["batchCalls"] * latency_ms / concurrency
        tables = run["tables"]
        aws = run["aws"]
        stored = s.get("Stored", 0)
        act_calls = aws["dynamoWriteCalls"].get(tables["activities"], 0)
        act_items = aws["dynamoItemsWritten"].get(tables["activities"], 0)
        state_calls = aws["dynamoWriteCalls"].get(tables["syncState"], 0)
        all_calls = sum(aws["dynamoWriteCalls"].values())
        discarded = s.get("Discarded", 0)
        steady = run.get("steady") or {}
        per_folder = steady.get("perFolder", {})
        budget = (m.get("outlookBudget") or {}).get("budget") or 10_000
        window_s = (m.get("outlookBudget") or {}).get("windowSeconds") or 600
        imports.append({
            "mailbox": run["mailbox"],
            "outlookBudgetBoundS": (max(mailbox_requests - 1, 0) // budget) * window_s,
            "outcome": run["outcome"],
            "invocations": run["invocations"],
            "wallMs": run["wallMs"],
            "latencyLimitMs": limit,
            "latencyLimitParallelMs": limit_parallel,
            "latencyLimitChainMs": limit_chain,
            "latencyLimitWithBatchRoundTripsMs": with_batch_trips,
            "wallOverLimit": ratio(run["wallMs"], limit),
            "cpuMs": cpu_ms,
            "cpuUsPerListedMessage": cpu_ms * 1000 / s["Scanned"] if s.get("Scanned") else None,
            "peakRssKb": run["after"]["peakRssKb"],
            "rssAtStartKb": run["before"]["rssKb"],
            "peakGrowthKb": run["after"]["peakRssKb"] - run["before"]["rssKb"],
            "motoMs": sum(aws.get("upstreamMs", {}).values()),
            "motoMsByOperation": aws.get("upstreamMs", {}),
            "scanned": s.get("Scanned"), "matched": s.get("Matched"), "stored": stored, "discarded": discarded,
            "pages": s.get("Pages"), "workerGraphRequests": s.get("GraphRequests"), "batchItems": s.get("BatchItems"),
            "bytesReceived": s.get("BytesReceived"),
            "bytesReceivedPerDiscarded": ratio(s.get("BytesReceived"), discarded),
            "simRequests": g,
            "mailboxStats": run["mailboxStats"],
            "dynamoWriteCallsActivities": act_calls,
            "dynamoItemsActivities": act_items,
            "dynamoWriteCallsSyncState": state_calls,
            "dynamoWriteCallsAll": all_calls,
            "activityWriteCallsPerStored": ratio(act_calls, stored),
            "allWriteCallsPerStored": ratio(all_calls, stored),
            "awsCalls": aws["calls"],
            "steady": {
                "wallMs": steady.get("wallMs"), "outcome": steady.get("outcome"), "folders": steady.get("folders"),
                "graphRequests": steady.get("graph", {}).get("total"), "perFolder": per_folder,
                "cpuMs": steady.get("cpuMs"),
            },
        })
    by_size = {i["mailbox"]: i for i in imports}
    big, little = by_size.get(large), by_size.get(small)
    if big:
        mb = big["peakRssKb"] / 1024
        target(f"{large:,}-message import: peak RSS of the worker", mb, 20, "MB", mb <= 20)
        target(f"{large:,}-message import: wall time vs Graph-latency limit", big["wallOverLimit"], 1.1, "ratio",
               big["wallOverLimit"] is not None and big["wallOverLimit"] <= 1.1,
               f"{big['wallMs'] / 1000:.1f} s vs {big['latencyLimitMs'] / 1000:.1f} s; counting each serial $batch's own "
               f"round trip on its slot the limit is {big['latencyLimitWithBatchRoundTripsMs'] / 1000:.1f} s")
    if big and little:
        r = ratio(big["peakRssKb"], little["peakRssKb"])
        target(f"peak RSS {large:,} vs {small:,} messages (memory flat)", r, 1.2, "ratio", r is not None and r <= 1.2)
    for i in imports:
        st = i["steady"]
        folders = st.get("folders") or 0
        counts = list(st["perFolder"].values())
        ok = folders > 0 and st.get("graphRequests") == folders and all(c == 1 for c in counts)
        target(f"unchanged mailbox ({i['mailbox']:,}): Graph requests per folder",
               (st.get("graphRequests") or 0) / folders if folders else None, 1, "requests", ok,
               f"{st.get('graphRequests')} requests for {folders} folders in {fmt(st.get('wallMs'), 0)} ms")

    # ---- 4. fan-out
    fo = m.get("fanOut") or {}
    big_fan = fo.get("standIn") if fo else None
    if big_fan:
        report = big_fan.get("report") or {}
        target(f"fan-out over {fo['seededConnections']:,} connections within Lambda's 900 s", big_fan["wallMs"] / 1000, 900, "s",
               big_fan["wallMs"] < 900_000 and report.get("enqueued", 0) >= fo["seededConnections"],
               f"{report.get('enqueued', 0):,} jobs, {big_fan['sendMessageBatchCalls']:,} SendMessageBatch calls; "
               "Query and SendMessageBatch answered by the proxy's stand-in")

    # ---- 5. cold starts (absent from a run without the `cold` part)
    py = ((m.get("pythonImport") or {}).get("runs") or {}).get("boto3+msal", {}).get("medianMs")
    cold = []
    for c in m["coldStarts"] if py else []:
        if c.get("skipped"):
            cold.append({"function": c["function"], "skipped": c["skipped"]})
            continue
        poll = sorted(c["toFirstPollMs"])[len(c["toFirstPollMs"]) // 2]
        first = sorted(c["toFirstResponseMs"])[len(c["toFirstResponseMs"]) // 2]
        cold.append({"function": c["function"], "toFirstPollMedianMs": poll, "toFirstResponseMedianMs": first,
                     "zipBytes": c["zipBytes"], "binaryBytes": c["binaryBytes"], "event": c["event"],
                     "ending": c["ending"], "peakRssKb": c["peakRssKb"], "runs": c["runs"]})
        target(f"{c['function']}: cold start to first poll vs `import boto3, msal`", ratio(poll, py), 1 / 20, "ratio",
               poll <= py / 20, f"{poll:.1f} ms vs {py:.0f} ms")
        target(f"{c['function']}: zipped binary", c["zipBytes"] / 1e6, 6, "MB", c["zipBytes"] <= 6e6)

    # ---- 7. change notifications (issue 15)
    notifications = notification_figures(m, target)

    # ---- 8. CRM changes (absent from a run without the `crm-changes` part)
    crm_changes = crm_change_figures(m)

    result = {
        "notifications": notifications,
        "crmChanges": crm_changes,
        "machine": m["machine"], "settings": settings, "setup": m["setup"], "totalSeconds": m["totalSeconds"],
        "engine": engine, "listings": [dict(v) for v in listings.values()], "wire": m.get("wire"),
        "importWarmUp": m.get("importWarmUp"), "imports": imports, "fanOut": fo, "coldStarts": cold, "pythonImport": m["pythonImport"],
        "targets": targets, "notes": m.get("notes", []), "outlookBudget": m.get("outlookBudget"),
        "missed": missed_notes(targets, engine, listings, imports, m),
    }
    (out / "report.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(markdown(result))
    met = sum(t["met"] for t in targets)
    print(f"report: {out / 'report.md'} ({met}/{len(targets)} targets met)")


# ---- issue 15: cost per user-month, polling only vs with change notifications

# us-east-1 list prices, read 2026-12-06 (free tiers left out). The AWS pages render their rate tables client-side,
# so each rate was cross-read from a stored copy of a page quoting it; the AWS page is the authority.
PRICES = {
    "lambdaGbSecond": {"usd": 0.0000133334, "unit": "GB-second, Arm (first 7.5 billion GB-s a month)",
                       "source": "https://aws.amazon.com/lambda/pricing/ (rate quoted by https://cloudchipr.com/blog/aws-lambda-pricing)"},
    "lambdaRequest": {"usd": 0.20 / 1e6, "unit": "request ($0.20 per 1M)",
                      "source": "https://aws.amazon.com/lambda/pricing/"},
    "readUnit": {"usd": 0.125 / 1e6, "unit": "DynamoDB on-demand read request unit ($0.125 per 1M)",
                 "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/ (rate quoted by https://airbyte.com/data-engineering-resources/dynamodb-pricing)"},
    "writeUnit": {"usd": 0.625 / 1e6, "unit": "DynamoDB on-demand write request unit ($0.625 per 1M)",
                  "source": "https://aws.amazon.com/dynamodb/pricing/on-demand/ (rate quoted by https://airbyte.com/data-engineering-resources/dynamodb-pricing)"},
    "sqsRequest": {"usd": 0.40 / 1e6, "unit": "SQS standard request ($0.40 per 1M, first 100 billion a month)",
                   "source": "https://aws.amazon.com/sqs/pricing/ (rate quoted by https://cloudburn.io/blog/amazon-sqs-pricing)"},
    "secretsCall": {"usd": 0.05 / 1e4, "unit": "Secrets Manager API call ($0.05 per 10,000)",
                    "source": "https://aws.amazon.com/secrets-manager/pricing/ (rate quoted by https://hivebook.wiki/wiki/aws-secrets-manager-rotated-secrets-dynamic-db-credentials-kms)"},
}
PRICES_READ = "2026-12-06"

# The profile of issue 15.
PROFILE = {"emailsPerDay": 50, "meetingChangesPerDay": 10, "matchRatio": 0.2, "days": 30,
           "mailRunsPerDay": 96, "calendarRunsPerDay": 24, "subscribedPollMinutes": 360,
           "renewEveryDays": (10_060 - 60 * 60) / (24 * 60), "renewalPassesPerDay": 4}
FIELDS = ["lambdaRequests", "gbSeconds", "readUnits", "writeUnits", "sqsRequests", "secretsCalls"]


def line(name, count, *, aws=None, wall_ms=0.0, memory_mb=0, invocations=True, extra=None, note=""):
    """`count` a day of something: Lambda invocations of `wall_ms` at `memory_mb` (when `invocations`), each with
    the AWS figures `aws` (per-run averages from measurements.json) plus `extra` (per-unit additions)."""
    aws = aws or {}
    extra = extra or {}
    per = {
        "lambdaRequests": 1.0 if invocations else 0.0,
        "gbSeconds": (max(wall_ms, 1.0) / 1000 * memory_mb / 1024) if invocations else 0.0,
        "readUnits": aws.get("readUnits", 0.0),
        "writeUnits": aws.get("writeUnits", 0.0),
        "sqsRequests": aws.get("sqsRequests", 0.0),
        "secretsCalls": aws.get("secretsManagerCalls", 0.0),
    }
    for k, v in extra.items():
        per[k] += v
    return {"item": name, "perDay": count, "each": per, "note": note,
            "month": {k: per[k] * count * PROFILE["days"] for k in FIELDS}}


def usd(month):
    p = {k: v["usd"] for k, v in PRICES.items()}
    return {
        "lambda": month["lambdaRequests"] * p["lambdaRequest"] + month["gbSeconds"] * p["lambdaGbSecond"],
        "dynamodb": month["readUnits"] * p["readUnit"] + month["writeUnits"] * p["writeUnit"],
        "sqs": month["sqsRequests"] * p["sqsRequest"],
        "secretsManager": month["secretsCalls"] * p["secretsCall"],
    }


def notification_figures(m, target):
    n = m.get("notifications") or {}
    if not n:
        return None
    lat = n["latency"]
    ms_ = lat["ms"]
    measured = lat["measured"]
    target("notification: arrival → stored activity, p99", ms_["p99"] / 1000 if measured else None, 10, "s",
           measured > 0 and lat["missed"] == 0 and ms_["p99"] <= 10_000,
           f"{measured} of {n['settings']['arrivals']} arrivals stored, {lat['missed']} missed; p50 "
           f"{fmt(ms_['p50'] / 1000 if measured else None)} s; polling alone: up to 900 s")

    mem = n["memoryMb"]
    glob = mem.get("globals") or 256
    mail_mb = mem.get("mail-sync") or glob
    cal_mb = mem.get("calendar-sync") or glob
    hook_mb = mem.get("consent-callback") or glob
    subs_mb = mem.get("subscriptions") or glob
    poll, notif, hook = n["pollRun"], n["notifiedRuns"], n["webhookPosts"]
    create, renew = n["subscription"]["create"], n["subscription"]["renew"]
    tables = n["tables"]
    P = PROFILE
    matched_mail = P["emailsPerDay"] * P["matchRatio"]
    matched_meetings = P["meetingChangesPerDay"] * P["matchRatio"]

    # The schedule's fan-out, per user and round: from the fan-out run on moto (its connections, tenants and — when
    # the worker has a subscription store — subscription reads, SendMessageBatch), when it ran.
    fo = ((m.get("fanOut") or {}).get("moto") or {})
    fo_run = fo.get("run") or {}
    users = fo.get("connections") or 0
    if fo_run.get("aws") and users:
        ru = fo_run["aws"].get("readUnits", {})
        sub_ru = ru.get(tables["subscriptions"], 0.0) / users
        base_ru = sum(v for t, v in ru.items() if t != tables["subscriptions"]) / users
        fan_wall = fo_run["wallMs"] / users
        fan_sqs = sum(v for k, v in fo_run["aws"]["calls"].items() if k.startswith("AmazonSQS.")) / users
        fan_source = f"measured: the fan-out over {users:,} connections on moto, divided by its connections"
    else:
        base_ru, sub_ru, fan_wall, fan_sqs = 0.5 / 8, 0.5, 0.0, 0.1
        fan_source = "estimated (the fan-out part did not run): a 500-byte connection item in an eventually consistent Query, one subscription item of BatchGetItem"
    # Jobs of scheduled rounds come to the worker in batches (up to 10 records): ReceiveMessage + DeleteMessageBatch
    # once per batch; a notified job comes alone (its own receive and delete).
    esm_batched, esm_alone = 2 / 10, 2.0
    run_extra = {"sqsRequests": esm_batched}
    notified_extra = {"sqsRequests": esm_alone}
    mail_rounds_per_poll = P["subscribedPollMinutes"] / 15
    cal_rounds_per_poll = P["subscribedPollMinutes"] / 60
    poll_wall = poll["wallMs"]["mean"]
    notif_wall = notif["wallMs"]["mean"]

    polling = [
        line("mail schedule runs, nothing new to store", P["mailRunsPerDay"] - matched_mail, aws=poll["aws"], wall_ms=poll_wall,
             memory_mb=mail_mb, extra=run_extra, note="measured: scheduled run of the unchanged mailbox"),
        line("mail schedule runs that store a match", matched_mail, aws=notif["aws"], wall_ms=notif_wall, memory_mb=mail_mb,
             extra=run_extra, note="measured: a run that stores one activity (the notified runs)"),
        line("calendar schedule runs, nothing new to store", P["calendarRunsPerDay"] - matched_meetings, aws=poll["aws"],
             wall_ms=poll_wall, memory_mb=cal_mb, extra=run_extra, note="not measured: taken as the mail run's figures"),
        line("calendar schedule runs that store a match", matched_meetings, aws=notif["aws"], wall_ms=notif_wall,
             memory_mb=cal_mb, extra=run_extra, note="not measured: taken as the mail run's figures"),
        line("fan-out share (every round reads the user's connection)", P["mailRunsPerDay"] + P["calendarRunsPerDay"],
             wall_ms=fan_wall, memory_mb=mail_mb, invocations=False,
             extra={"readUnits": base_ru, "sqsRequests": fan_sqs, "gbSeconds": fan_wall / 1000 * mail_mb / 1024},
             note=fan_source),
    ]
    safety_mail = P["mailRunsPerDay"] / mail_rounds_per_poll
    safety_cal = P["calendarRunsPerDay"] / cal_rounds_per_poll
    notified_mail_nothing = P["emailsPerDay"] - matched_mail
    notified_cal_nothing = P["meetingChangesPerDay"] - matched_meetings
    renewals_per_day = 2 / P["renewEveryDays"]
    with_notifications = [
        line("webhook POSTs (consent-callback), one per notification", P["emailsPerDay"] + P["meetingChangesPerDay"],
             aws=hook["aws"], wall_ms=hook["handlerMs"]["mean"], memory_mb=hook_mb,
             note="measured: the handler's time and AWS calls per POST during the arrivals"),
        line("notified mail runs that store a match", matched_mail, aws=notif["aws"], wall_ms=notif_wall, memory_mb=mail_mb,
             extra=notified_extra, note="measured: the notified runs"),
        line("notified mail runs, a message that does not match", notified_mail_nothing, aws=poll["aws"], wall_ms=poll_wall,
             memory_mb=mail_mb, extra=notified_extra, note="taken as the unchanged-mailbox run (one message listed, none fetched)"),
        line("notified calendar runs that store a match", matched_meetings, aws=notif["aws"], wall_ms=notif_wall,
             memory_mb=cal_mb, extra=notified_extra, note="not measured: taken as the mail run's figures"),
        line("notified calendar runs, a change that does not match", notified_cal_nothing, aws=poll["aws"], wall_ms=poll_wall,
             memory_mb=cal_mb, extra=notified_extra, note="not measured: taken as the mail run's figures"),
        line(f"safety-net polls (every {P['subscribedPollMinutes']} min, mail and calendar)", safety_mail + safety_cal,
             aws=poll["aws"], wall_ms=poll_wall, memory_mb=mail_mb, extra=run_extra,
             note="measured: scheduled run of the unchanged mailbox"),
        line("fan-out share (connection and subscription read every round)", P["mailRunsPerDay"] + P["calendarRunsPerDay"],
             wall_ms=fan_wall, memory_mb=mail_mb, invocations=False,
             extra={"readUnits": base_ru + sub_ru, "sqsRequests": fan_sqs / mail_rounds_per_poll,
                    "gbSeconds": fan_wall / 1000 * mail_mb / 1024},
             note=fan_source + "; jobs sent only in the user's safety-net rounds"),
        line("renewals (one PATCH per subscription every ~4.6 days, 2 subscriptions)", renewals_per_day, aws=renew["aws"],
             wall_ms=renew["wallMs"], memory_mb=subs_mb, extra={"sqsRequests": 0.0},
             note="measured: Manager::handle(renew) in process; memory: "
                  + ("template.yaml" if mem.get("subscriptions") else "Globals (template.yaml has no subscriptions function)")),
        line("renewal pass reads (every 6 h: connection, both subscriptions)", P["renewalPassesPerDay"], invocations=False,
             extra={"readUnits": base_ru / 2 + 2 * max(sub_ru, 0.5)},
             note="estimated: the fan-out's connection read per user and one eventually consistent read per subscription"),
    ]

    def total(lines):
        month = {k: sum(l["month"][k] for l in lines) for k in FIELDS}
        money = usd(month)
        return {"month": month, "usd": money, "usdTotal": sum(money.values())}

    cost = {"profile": P, "prices": PRICES, "pricesRead": PRICES_READ,
            "polling": {"lines": polling, **total(polling)},
            "withNotifications": {"lines": with_notifications, **total(with_notifications)},
            "perRun": {"pollWallMs": poll_wall, "notifiedWallMs": notif_wall, "memoryMb": {"mail-sync": mail_mb,
                       "calendar-sync": cal_mb, "consent-callback": hook_mb, "subscriptions": subs_mb}}}
    return {"raw": n, "cost": cost}


def crm_change_figures(m):
    """The `crm-changes` part: each catch-up beside the full import of the same mailbox."""
    c = m.get("crmChanges")
    if not c:
        return None

    def row(label, addition, graph, wall_ms, stored, aws_calls, expected=None, invocations=None):
        g = graph
        return {"change": label, "addition": addition, "graphRequests": g["total"], "searches": g.get("searches", 0),
                "listPages": g["listPages"], "batchCalls": g["batchCalls"], "fetches": g["fetches"],
                "folderRequests": g["folderRequests"], "other": g["other"], "wallMs": wall_ms, "stored": stored,
                "expected": expected, "awsCalls": aws_calls, "invocations": invocations}

    full = c["fullImport"]
    rows = []
    for step in c["steps"]:
        r = row(step["step"], step["addition"], step["graph"], step["wallMs"], step["newIds"],
                sum(step["aws"]["calls"].values()), step["expectedNew"], step["invocations"])
        r.update({"involving": step["involving"], "goneIds": step["goneIds"], "cpuMs": step["cpuMs"],
                  "outcome": step["outcome"], "crmImportMs": step["crmImportMs"],
                  "graphVsImport": ratio(step["graph"]["total"], full["graph"]["total"]),
                  "wallVsImport": ratio(step["wallMs"], full["wallMs"]),
                  "motoMs": sum(step["aws"].get("upstreamMs", {}).values()),
                  "awsCallsByOperation": step["aws"]["calls"],
                  "readUnitsByTable": step["aws"].get("readUnits", {}),
                  "workerStored": (step.get("summary") or {}).get("Stored")})
        rows.append(r)
    rows.append(row("full import", f"{c['mailbox']:,}-message mailbox", full["graph"], full["wallMs"],
                    c["storedAfterImport"], full["awsCalls"], c["expectedImport"]))
    return {"mailbox": c["mailbox"], "rows": rows, "restored": c.get("restored")}


def missed_notes(targets, engine, listings, imports, m) -> list:
    """Why each missed target is missed, from this run's own figures, and what would close it."""
    notes = []
    missed = {t["target"].split(" (")[0] for t in targets if not t["met"]}
    page = m["settings"]["pageSize"]
    e = engine.get(f"parse_and_match/{page}") or {}
    p = engine.get(f"parse_only/{page}") or {}
    g = engine.get(f"gunzip/{page}") or {}
    if any(t.startswith("engine") for t in missed) and e:
        notes.append(
            f"Engine: {e['nsPerMessage']:.0f} ns and {e['allocsPerMessage']:.1f} allocations per message, of which "
            f"{p.get('nsPerMessage', 0):.0f} ns is serde_json merely reading past the page (the floor of any parse: every "
            f"string scanned, nothing kept) and {e['nsPerMessage'] - p.get('nsPerMessage', 0):.0f} ns the engine's own "
            "work (one pass: each item's fields visited in place, each address lower-cased and looked up with foldhash in "
            "the compact CRM index as it is read). Candidates: a SIMD JSON scanner (simd-json, sonic-rs) to lower the "
            "floor itself, at the price of a larger, unsafe-heavy dependency.")
    rust = next((l for (c, mb), l in listings.items() if c == "rust" and mb == m["settings"]["smallMailbox"]), None)
    large = max((l for (c, mb), l in listings.items() if c == "rust" and mb != m["settings"]["smallMailbox"]),
                key=lambda l: l["mailbox"], default=None)
    if any(t.startswith("worker CPU per listed message") for t in missed) and rust:
        known = e.get("nsPerMessage", 0) / 1000 + g.get("nsPerMessage", 0) / 1000
        notes.append(
            f"CPU per listed message: the Rust listing spends {rust['cpuUsPerMessage']:.2f} µs per message: engine "
            f"{e.get('nsPerMessage', 0) / 1000:.2f} µs, gunzip (zlib-rs) {g.get('nsPerMessage', 0) / 1000:.2f} µs, and "
            f"{rust['cpuUsPerMessage'] - known:.2f} µs in everything else: hyper reading the compressed body chunk by "
            "chunk, the kernel's socket reads and wake-ups, and the listing's start (the first connection, the heap "
            "growing to a page's size), all divided by 500 messages a page"
            + (f"; the {large['mailbox']:,}-message listing, over which the start is spread thinner, spends "
               f"{large['cpuUsPerMessage']:.2f} µs" if large else "")
            + ". Candidates: parsing while the body streams in (no whole-page buffer), and a SIMD JSON scanner for the "
            "engine's floor.")
    big = max(imports, key=lambda i: i["mailbox"]) if imports else None
    w = m.get("importWarmUp") or {}
    if any("peak RSS of the worker" in t for t in missed) and big:
        cold = [c for c in m["coldStarts"] if c["function"] == "mail-sync" and not c.get("skipped")]
        cold_rss = cold[0]["peakRssKb"] / 1024 if cold else 0
        notes.append(
            f"Peak RSS: a fresh mail-sync process peaks at {cold_rss:.1f} MB; with the tenant's CRM index loaded "
            f"({m['settings']['crmAddresses']:,} addresses, {m['settings']['crmDomains']:,} domains, held as one compact "
            f"index of about 1 MB built while the DynamoDB pages stream in) the warm container is at "
            f"{w.get('rssAfterKb', 0) / 1024:.1f} MB, and the import adds {big['peakGrowthKb'] / 1024:.1f} MB: the fetch "
            "pipeline holds a listed page ahead and the fetched matches of up to three pages (memory is flat in mailbox size). "
            "The rest is the runtime, the SDK and HTTP clients, and what glibc keeps of the load's freed pages. Candidates: a "
            "shallower pipeline (costs wall time), MALLOC_ARENA_MAX=2 (about 0.6 MB in one measurement), and releasing the "
            "DynamoDB pages' memory to the system after the index is built.")
    if any("wall time vs Graph-latency limit" in t for t in missed) and big:
        notes.append(
            f"Wall time: {big['wallMs'] / 1000:.0f} s against a {big['latencyLimitMs'] / 1000:.0f} s limit. Fetches go in "
            f"serial `$batch` calls (one `dependsOn` chain, one mailbox slot each), so each batch's own round trip is time its "
            f"slot does no mailbox work ({big['simRequests']['batchCalls']:,} batches: counting them the limit is "
            f"{big['latencyLimitWithBatchRoundTripsMs'] / 1000:.0f} s); batches end at page boundaries, so a page's last one is "
            f"partial ({big['simRequests']['fetches'] / max(big['simRequests']['batchCalls'], 1):.1f} items a batch on "
            f"average, of 20), and the store (moto took {big['motoMsByOperation'].get('DynamoDB_20120810.BatchWriteItem', 0) / 1000:.0f} s "
            "to answer BatchWriteItem) runs behind the fetches with a bounded queue. Candidates: batches that span page "
            "boundaries, and a deeper store queue.")
    nf = m.get("notifications") or {}
    if any(t.startswith("notification: arrival") for t in missed) and nf:
        lat, runs = nf["latency"], nf["notifiedRuns"]
        notes.append(
            f"Notification latency: p99 {lat['ms']['p99'] / 1000:.1f} s, {lat['missed']} arrivals not stored within "
            f"{nf['settings']['arrivalTimeoutMs'] / 1000:.0f} s, {lat['answeredByOneRun']} of {lat['measured']} answered by "
            f"one run. The fixed part is the debounce ({nf['settings']['debounceMs'] / 1000:.0f} s) and the event source "
            f"mapping's batching window ({nf['settings']['batchingWindowMs'] / 1000:.0f} s); the worker's run took p99 "
            f"{runs['wallMs']['p99'] / 1000:.1f} s. See the webhook's and worker's logs under logs/ for the slow arrivals "
            "(rows in measurements.json list each arrival's latency and runs).")
    if any(t.endswith("zipped binary") for t in missed):
        notes.append(
            "Zipped binaries: x86_64 builds of the release profile (opt-level \"s\" with the listing path at 3, fat LTO, "
            "stripped), each with the AWS SDK and its aws-lc crypto. Candidates (not measured): rustls on ring instead of "
            "aws-lc, fewer AWS SDK operations compiled in.")
    return notes


def markdown(r) -> str:
    s, lines = r["settings"], []
    add = lines.append
    add("# office365-connector: `make bench` report\n")
    mach = r["machine"]
    add(f"One run, one machine: {mach['cpus']} CPUs ({mach['cpu']}), {mach['arch']}, Linux {mach['kernel']}. "
        f"microsoft-sim with {s['latencyMs']} ms per Graph request, moto for AWS, release builds. "
        f"Generated mailboxes (seed {s['seed']}, {s['matchRatio']:.0%} CRM matches); CRM of {s['crmAddresses']:,} addresses "
        f"and {s['crmDomains']:,} account domains. Worker listing: `$select={s['listSelect']}`, {s['pageSize']} per page. "
        f"Total run {r['totalSeconds']:.0f} s.\n")

    add("## Targets (issue 9)\n")
    add("| Target | Measured | Limit | Met |")
    add("|---|---|---|---|")
    for t in r["targets"]:
        unit = "" if t["unit"] == "ratio" else f" {t['unit']}"
        measured = "n/a" if t["measured"] is None else (
            f"1/{1 / t['measured']:,.0f}" if t["unit"] == "ratio" and t["measured"] and t["measured"] < 0.2 else fmt(t["measured"]) + unit)
        limit = f"1/{1 / t['limit']:,.0f}" if t["unit"] == "ratio" and t["limit"] < 1 else fmt(t["limit"]) + unit
        note = f" ({t['note']})" if t["note"] else ""
        add(f"| {t['target']}{note} | {measured} | ≤ {limit} | {'yes' if t['met'] else '**MISSED**'} |")
    add("")

    add("## 1. Engine cost per message (divan)\n")
    add("| Benchmark | Messages/page | ns/message | allocations/message | bytes allocated/message |")
    add("|---|---|---|---|---|")
    for k, e in sorted(r["engine"].items()):
        add(f"| {k} | {e['pageMessages']} | {fmt(e['nsPerMessage'], 0)} | {fmt(e['allocsPerMessage'], 3)} | {fmt(e['allocBytesPerMessage'], 1)} |")
    add("")

    add("## 2. Import at scale through the real worker (`mail-sync` release binary, moto store)\n")
    add("| | " + " | ".join(f"{i['mailbox']:,} messages" for i in r["imports"]) + " |")
    add("|---|" + "---|" * len(r["imports"]))
    rows = [
        ("outcome (invocations)", lambda i: f"{i['outcome']} ({i['invocations']})"),
        ("wall time", lambda i: f"{i['wallMs'] / 1000:.1f} s"),
        ("Graph-latency limit", lambda i: f"{i['latencyLimitMs'] / 1000:.1f} s"),
        ("wall ÷ limit", lambda i: fmt(i["wallOverLimit"])),
        ("limit counting each $batch's own round trip", lambda i: f"{i['latencyLimitWithBatchRoundTripsMs'] / 1000:.1f} s"),
        ("Outlook budget bound (see below)", lambda i: f"≥ {i['outlookBudgetBoundS'] / 60:.0f} min" if i["outlookBudgetBoundS"] else "none"),
        ("worker CPU (user+sys)", lambda i: f"{i['cpuMs'] / 1000:.2f} s"),
        ("worker CPU per listed message (everything)", lambda i: f"{fmt(i['cpuUsPerListedMessage'])} µs"),
        ("peak RSS of the worker (warm container)", lambda i: f"{i['peakRssKb'] / 1024:.1f} MB"),
        ("… RSS when the run started / growth during the run", lambda i: f"{i['rssAtStartKb'] / 1024:.1f} MB / {i['peakGrowthKb'] / 1024:.1f} MB"),
        ("listed / matched / stored / discarded", lambda i: f"{i['scanned']:,} / {i['matched']:,} / {i['stored']:,} / {i['discarded']:,}"),
        ("Graph requests (sim log): listing pages", lambda i: f"{i['simRequests']['listPages']:,}"),
        ("… $batch calls / fetches inside them", lambda i: f"{i['simRequests']['batchCalls']:,} / {i['simRequests']['fetches']:,}"),
        ("… folder requests / other", lambda i: f"{i['simRequests']['folderRequests']} / {i['simRequests']['other']}"),
        ("… throttled (429)", lambda i: f"{i['simRequests']['throttled']}"),
        ("max requests in flight on the mailbox", lambda i: str(max([x.get('maxInFlight', 0) for x in (i['mailboxStats'] if isinstance(i['mailboxStats'], list) else i['mailboxStats'].get('value', []))] or [0]))),
        ("bytes received (decoded)", lambda i: f"{i['bytesReceived']:,}"),
        ("bytes received per discarded message", lambda i: fmt(i["bytesReceivedPerDiscarded"], 0)),
        ("DynamoDB write calls, activities table (per stored)", lambda i: f"{i['dynamoWriteCallsActivities']:,} ({fmt(i['activityWriteCallsPerStored'], 3)})"),
        ("DynamoDB write calls, all tables (per stored)", lambda i: f"{i['dynamoWriteCallsAll']:,} ({fmt(i['allWriteCallsPerStored'], 3)})"),
        ("… of which sync-state (checkpoints, lease)", lambda i: f"{i['dynamoWriteCallsSyncState']:,}"),
        ("time moto took to answer (summed over calls)", lambda i: f"{i['motoMs'] / 1000:.1f} s"),
        ("… of which BatchWriteItem", lambda i: f"{i['motoMsByOperation'].get('DynamoDB_20120810.BatchWriteItem', 0) / 1000:.1f} s"),
    ]
    for label, f in rows:
        add(f"| {label} | " + " | ".join(f(i) for i in r["imports"]) + " |")
    add("")
    add(f"Graph-latency limit = max(Graph requests on the mailbox × {s['latencyMs']} ms ÷ {s['mailboxConcurrency']} "
        f"(Outlook's per-mailbox concurrency), the longest chain of one folder's pages × {s['latencyMs']} ms). "
        "Mailbox requests are every request the sim logged for the user except the outer `$batch` calls, which are not "
        "mailbox requests at Outlook.\n")
    ob = r.get("outlookBudget") or {}
    add(f"Outlook allows {ob.get('budget', 10000):,} requests per app and mailbox in {ob.get('windowSeconds', 600)} s (the sim "
        "enforces it; every request inside a `$batch` counts). The sim's budget was lifted for these imports so that the import "
        "itself is measured; at Microsoft an import that needs more requests than that waits for the window (the worker parks the "
        "mailbox and resumes later), hence the budget bound above.\n")
    w = r.get("importWarmUp") or {}
    if w:
        add(f"The worker process is a warm container: one `mail-sync` process (cold start {w['coldStartMs']:.0f} ms) first ran a job "
            f"for a user with an empty mailbox, which loads the tenant's CRM index into the container ({w['crmQueryCalls']} Query calls, "
            f"{w['wallMs'] / 1000:.1f} s, of which moto took {w['motoQueryMs'] / 1000:.1f} s to answer the Query pages; RSS after it "
            f"{w['rssAfterKb'] / 1024:.1f} MB). Each import then ran in that process, its peak RSS reset to the current RSS just "
            "before (`/proc/<pid>/clear_refs`), followed by the unchanged-mailbox run.\n")

    add("## 3. Steady state: unchanged mailbox (same warm process)\n")
    add("| Mailbox | Folders | Graph requests | Per folder | Wall | CPU |")
    add("|---|---|---|---|---|---|")
    for i in r["imports"]:
        st = i["steady"]
        per = ", ".join(str(v) for v in st["perFolder"].values())
        add(f"| {i['mailbox']:,} | {st['folders']} | {st['graphRequests']} | {per} | {fmt(st['wallMs'], 0)} ms | {fmt(st['cpuMs'], 0)} ms |")
    add("")

    fo = r["fanOut"]
    if fo:
        add("## 4. Fan-out (schedule mode, real binary)\n")
        add(f"- {fo['seededConnections']:,} active connections in {fo['tenants']:,} pre-authorized tenants, written to moto's "
            f"connections table with BatchWriteItem in {fo['seedMs'] / 1000:.1f} s")
        for label, run in (("moto alone", (fo.get("moto") or {}).get("run")), ("stand-in", fo.get("standIn"))):
            if not run:
                continue
            if "error" in run:
                add(f"- {label}: failed: {run['error']}")
                continue
            rep = run.get("report") or {}
            moto = run["aws"].get("upstreamMs", {})
            add(f"- **{label}**: {rep.get('scanned', 0):,} connections read, {rep.get('enqueued', 0):,} jobs enqueued in "
                f"**{run['wallMs'] / 1000:.1f} s** (function's own figure {rep.get('elapsedMs', 0) / 1000:.1f} s), "
                f"{run['sendMessageBatchCalls']:,} SendMessageBatch calls, {run['queryCalls']:,} Query pages, "
                f"{rep.get('tenantsRead', 0):,} tenant reads; CPU {run['cpuMs'] / 1000:.2f} s, peak RSS {run['peakRssKb'] / 1024:.1f} MB; "
                f"moto's answer time summed: " + ", ".join(f"{k.split('.')[-1]} {v / 1000:.1f} s" for k, v in moto.items()))
        add("")
        add("moto re-scans and re-sorts the whole connections table for every Query page of the `ByStatus` index, and "
            "re-scans the queue for every message sent, so the full fan-out runs with the proxy answering exactly those two "
            "calls (the Query from the items written to moto through it, SendMessageBatch to the mail queue in SQS's wire "
            "format, MD5 included); tenant reads still go to moto. The run on moto alone shows the same code path end to "
            "end at a size moto handles.\n")

    py = (r.get("pythonImport") or {}).get("runs")
    if py:
        add("## 5. Cold start (release binaries, local Runtime API)\n")
        add(f"`python3 -c 'import boto3, msal'`: median **{py['boto3+msal']['medianMs']:.0f} ms** "
            f"(bare interpreter {py['bare interpreter']['medianMs']:.0f} ms), {len(py['boto3+msal']['runsMs'])} runs.\n")
        add("| Function | exec → first poll (median) | exec → first answer (median) | vs Python import | zipped | binary | first event |")
        add("|---|---|---|---|---|---|---|")
        for c in r["coldStarts"]:
            if c.get("skipped"):
                add(f"| {c['function']} | skipped: {c['skipped']} | | | | | |")
                continue
            add(f"| {c['function']} | {c['toFirstPollMedianMs']:.1f} ms | {c['toFirstResponseMedianMs']:.1f} ms | "
                f"1/{py['boto3+msal']['medianMs'] / c['toFirstPollMedianMs']:.0f} | {c['zipBytes'] / 1e6:.2f} MB | "
                f"{c['binaryBytes'] / 1e6:.2f} MB | {c['event']} |")
        add("")

    if r["listings"] or r.get("wire"):
        add("## 6. Side by side: the same sim, folder, `$select`, page size and CRM\n")
        add("| Client | Mailbox | Listed | Matched | CPU per message | Loop wall | Process CPU | Peak RSS | Decoded bytes/message |")
        add("|---|---|---|---|---|---|---|---|---|")
        for l in r["listings"]:
            add(f"| {l['client']} | {l.get('mailbox', '')} | {l['listed']:,} | {l['matched']:,} | {fmt(l['cpuUsPerMessage'])} µs | "
                f"{l['loopWallMs'] / 1000:.1f} s | {l['processCpuMs'] / 1000:.2f} s | {l['peakRssKb'] / 1024:.1f} MB | "
                f"{fmt(l['bytesPerMessage'], 0)} |")
        add("")
        for w in r.get("wire") or []:
            add(f"- {w['mailbox']:,}-message listing: {w['pages']} pages, {w['decodedBytes']:,} bytes decoded, "
                f"{w['gzipBytes']:,} bytes on the wire (gzip)")
        add("")

    nf = r.get("notifications")
    if nf:
        n, cost = nf["raw"], nf["cost"]
        st, lat = n["settings"], n["latency"]
        add("## 7. Change notifications (issue 15)\n")
        add(f"A user with a {st['mailboxMessages']}-message Inbox, first import done through the release `mail-sync` binary; "
            f"its completed run queued `ensure` on SubscriptionQueue, handled by the subscriptions manager "
            f"(`Manager::handle`), which created `{n['subscription']['resource']}` ({n['subscription']['changeTypes']}) at the "
            f"sim after its validation handshake with the webhook. Graph latency {st['latencyMs']} ms.\n")
        add(f"**Arrival → stored activity** ({lat['measured']} of {st['arrivals']} arrivals, {lat['missed']} missed; one "
            f"CRM-matching message at a time through the sim's control API, {st['spacingMs'] / 1000:.0f}–"
            f"{(st['spacingMs'] + st['jitterMs']) / 1000:.0f} s apart, measured spacing p50 {lat['spacingMs']['p50'] / 1000:.1f} s; "
            f"the activities table read with a consistent Query every {st['pollEveryMs']:.0f} ms, so each figure is late by up "
            f"to that much):\n")
        add("| p50 | p99 | max | mean | answered by one run | target |")
        add("|---|---|---|---|---|---|")
        d = lat["ms"]
        add(f"| {fmt(d['p50'] / 1000)} s | {fmt(d['p99'] / 1000)} s | {fmt(d['max'] / 1000)} s | {fmt(d['mean'] / 1000)} s | "
            f"{lat['answeredByOneRun']} of {lat['measured']} ({lat['answeredByOneRun'] / max(lat['measured'], 1):.0%}) | "
            f"p99 ≤ 10 s (polling alone: up to 900 s) |")
        add("")
        add(f"What the time is made of: the sim posts the notification at once; the webhook claims the wake and queues one "
            f"job delayed by the debounce ({st['debounceMs'] / 1000:.0f} s); the event source mapping (MailSyncFunction's "
            f"batch size {st['batchSize']}, batching window {st['batchingWindowMs'] / 1000:.0f} s) hands it to the warm worker; the run "
            f"(p50 {fmt(n['notifiedRuns']['wallMs']['p50'], 0)} ms) lists the delta, fetches and stores the match. "
            f"{n['notifiedRuns']['runs']} worker runs ({n['notifiedRuns']['failed']} failed), "
            f"{n['webhookPosts']['posts']} notification POSTs ({n['webhookPosts']['woke']} wakes, "
            f"{n['webhookPosts']['debounced']} debounced, {n['webhookPosts']['non202']} not 202), "
            f"{n['webhookPosts']['simDeliveries']} deliveries in the sim's log.\n")
        add("**Webhook answers per second, one instance** (the connector's `Webhook::handle` behind an axum server on a "
            "current-thread runtime of its own thread, as consent-callback's `main` runs; valid one-item batches over "
            "synthetic subscriptions, most found debounced):\n")
        add("| Store and queue | in flight | answers/s | answer p50 | answer p99 | handler p50 | handler p99 | wakes | debounced | statuses |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for label, t in n["throughput"].items():
            name = {"moto": "moto through the AWS SDK (DynamoSubscriptionStore, SqsJobQueue)",
                    "memory": "in memory (MemorySubscriptionStore, MemoryJobQueue): the handler's own cost"}.get(label, label)
            add(f"| {name} | {t['concurrency']} | **{fmt(t['answersPerSecond'], 0)}** | {t['answerMs']['p50']:.3f} ms | "
                f"{t['answerMs']['p99']:.3f} ms | {t['handlerMs']['p50']:.3f} ms | {t['handlerMs']['p99']:.3f} ms | "
                f"{t['woke']:,} | {t['debounced']:,} | {', '.join(f'{k}: {v:,}' for k, v in t['statuses'].items())} |")
        add("")
        add("moto answers each DynamoDB and SQS call in milliseconds of Python, so the first row measures moto; a Lambda "
            "instance takes one request at a time, so one deployed instance answers about 1 ÷ (answer time) per second, "
            "and Lambda adds instances for concurrent POSTs.\n")
        add(f"**Cost per user-month** ({cost['profile']['emailsPerDay']} emails and {cost['profile']['meetingChangesPerDay']} "
            f"meeting changes a day, {cost['profile']['matchRatio']:.0%} CRM matches, {cost['profile']['days']} days; "
            f"us-east-1 list prices read {cost['pricesRead']}, free tiers left out):\n")
        for key, label in (("polling", "Polling only"), ("withNotifications", "With change notifications")):
            c = cost[key]
            add(f"*{label}*\n")
            add("| Item | a day | Lambda requests | GB-s | RRU | WRU | SQS requests | Secrets Manager calls | source |")
            add("|---|---|---|---|---|---|---|---|---|")
            for l in c["lines"]:
                mo = l["month"]
                add(f"| {l['item']} | {l['perDay']:.2f} | {fmt(mo['lambdaRequests'], 0)} | {fmt(mo['gbSeconds'])} | "
                    f"{fmt(mo['readUnits'], 0)} | {fmt(mo['writeUnits'], 0)} | {fmt(mo['sqsRequests'], 0)} | "
                    f"{fmt(mo['secretsCalls'], 0)} | {l['note']} |")
            mo = c["month"]
            add(f"| **month** | | {fmt(mo['lambdaRequests'], 0)} | {fmt(mo['gbSeconds'])} | {fmt(mo['readUnits'], 0)} | "
                f"{fmt(mo['writeUnits'], 0)} | {fmt(mo['sqsRequests'], 0)} | {fmt(mo['secretsCalls'], 0)} | |")
            u = c["usd"]
            add(f"\nUSD a user-month: Lambda ${u['lambda']:.5f}, DynamoDB ${u['dynamodb']:.5f}, SQS ${u['sqs']:.5f}, "
                f"Secrets Manager ${u['secretsManager']:.5f}: **${c['usdTotal']:.4f}**\n")
        add("The model: polling = 96 mail and 24 calendar schedule runs a day, the runs that find a match costing what a "
            "measured run that stores one activity costs, the others what a measured run of the unchanged mailbox costs; "
            "with notifications = one webhook POST and one run per change (bursts merge within the 3 s debounce; at "
            "this profile's rate they are taken not to), the safety-net polls (every `SUBSCRIBED_POLL_MINUTES`, 360 by "
            "default: 4 a day per kind), the fan-out still reading every user each round plus their subscription, "
            "renewals (one PATCH per subscription every ~4.6 days: lifetime 10,060 min, renewed when fewer than 60 h "
            "remain) and the renewal pass's reads. Per-run AWS figures come from the counting proxies (DynamoDB request "
            "units estimated from the wire: `awsproxy::read_units` / `write_units`); Lambda time is the measured wall "
            "time of the invocation at the function's MemorySize in template.yaml; the worker was one warm process, so "
            "its token and CRM index were cached as in a warm Lambda container (a cold one adds Secrets Manager reads). Wall "
            "times were taken on moto, which answers each call in milliseconds of Python, so the GB-s err high. Calendar runs were not measured: the "
            "mail run's figures stand in for them. API Gateway (the webhook's HTTP API requests) and S3 (message bodies) are left out. Most write units of a "
            "run are the mailbox budget's transactions (`TransactWriteItems` on SyncStateTable with a condition on "
            "ConnectionsTable, two write units per item).\n")
        add("| Price | USD | source |")
        add("|---|---|---|")
        for k, p in cost["prices"].items():
            add(f"| {p['unit']} | {p['usd']:.10g} | {p['source']} |")
        add("")
    cc = r.get("crmChanges")
    if cc:
        add("## 8. CRM changes: catching up on the large mailbox\n")
        add(f"Right after the {cc['mailbox']:,}-message import, in the same warm `mail-sync` process: the CRM is imported "
            "again with one addition, then a `CrmChanged` job runs for the user (continuations included). First an added "
            "contact (a lead: a vendor address of the mailbox that no record knows, searched with `$search`), then an "
            "added domain (an account owning that vendor's domain: every folder lists its window again against the "
            "addition). Stored = mail ids new in the activities table; expected = the generated mailbox's mail that "
            "involves the addition and that no earlier record matched (the run fails on any difference, or on a stored "
            "message gone).\n")
        add("| Change | Graph requests | … searches | … list pages | … `$batch` calls (fetches) | Wall | Stored (expected) | AWS calls | vs full import: requests / wall |")
        add("|---|---|---|---|---|---|---|---|---|")
        for c in cc["rows"]:
            vs = "" if c["change"] == "full import" else f"{fmt(c['graphVsImport'], 4)} / {fmt(c['wallVsImport'], 4)}"
            add(f"| {c['change']} ({c['addition']}) | {c['graphRequests']:,} | {c['searches']:,} | {c['listPages']:,} | "
                f"{c['batchCalls']:,} ({c['fetches']:,}) | {c['wallMs'] / 1000:.1f} s | {c['stored']:,} ({c['expected']:,}) | "
                f"{c['awsCalls']:,} | {vs} |")
        add("")
        for c in cc["rows"]:
            if c["change"] == "full import":
                continue
            add(f"- {c['change']}: {c['involving']:,} messages of the mailbox involve {c['addition']}, {c['expected']:,} "
                f"of them no earlier record matched; {c['fetches']:,} fetched and {c['workerStored']:,} written by the worker "
                f"({c['workerStored'] - c['stored']:,} of them stored already, written again with the addition among "
                f"their matches); {c['invocations']} invocation(s), outcome `{c['outcome']}`, CPU "
                f"{c['cpuMs'] / 1000:.2f} s, moto's answer time summed {c['motoMs'] / 1000:.1f} s, the CRM import itself "
                f"(the bench's, before the job) {c['crmImportMs'] / 1000:.1f} s. AWS calls: "
                + ", ".join(f"{k.split('.')[-1]} {v:,}" for k, v in sorted(c["awsCallsByOperation"].items()))
                + "; DynamoDB read units by table (estimated from the wire): "
                + ", ".join(f"{k.split('-', 1)[-1]} {v:,.0f}" for k, v in sorted(c["readUnitsByTable"].items())))
        add("- Wall time here is mostly moto answering DynamoDB (its summed answer time is about the wall): the warm "
            "container loads the changed CRM index again and reads the additions; the removal check reads the user's "
            "stored activities only after an import that removed a record (these only added: the activities table's "
            "read units are the writes' own). Graph's share is the requests above at the "
            f"sim's {s['latencyMs']} ms each.")
        if cc.get("restored"):
            add("- The benchmark CRM was imported again afterwards, so the parts after this one ran with it.")
        add("")
    if r.get("missed"):
        add("## Why targets are missed, and what would close them\n")
        for n in r["missed"]:
            add(f"- {n}")
        add("")
    if r["notes"]:
        add("## Notes from the run\n")
        for n in r["notes"]:
            add(f"- {n}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
