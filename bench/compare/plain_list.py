"""Plain Python (requests + json): pages a mail folder's message delta with the connector's $select and page size,
matches every listed message against the CRM with Python sets, and prints one JSON report line (the fields of the
Rust listing client). Token in BENCH_GRAPH_TOKEN; nothing else is read from the environment."""

import json
import os
import resource
import sys
import time

import requests

from crm_match import Crm, load_spec, peak_rss_kb

PARTICIPANTS_ONE = ("from", "sender")
PARTICIPANTS_MANY = ("toRecipients", "ccRecipients", "bccRecipients", "replyTo")


def addresses(message):
    for key in PARTICIPANTS_ONE:
        recipient = message.get(key)
        if recipient:
            yield (recipient.get("emailAddress") or {}).get("address")
    for key in PARTICIPANTS_MANY:
        for recipient in message.get(key) or ():
            yield (recipient.get("emailAddress") or {}).get("address")


def main():
    spec = load_spec(sys.argv)
    crm = Crm(spec["crm"], spec["owner"], spec["tenantDomain"])
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = "Bearer " + os.environ["BENCH_GRAPH_TOKEN"]
    session.headers["Prefer"] = f'odata.maxpagesize={spec["pageSize"]}, IdType="ImmutableId"'
    report = {"client": "python-requests", "pages": 0, "listed": 0, "matched": 0, "discarded": 0, "removed": 0, "bytes": 0}
    matched_ids = []

    cpu, wall = time.process_time(), time.perf_counter()
    url = spec["graphBase"] + "/v1.0" + spec["path"]
    while url:
        response = session.get(url, timeout=120)
        response.raise_for_status()
        body = response.content
        report["bytes"] += len(body)
        page = json.loads(body)
        report["pages"] += 1
        for message in page.get("value", ()):
            if "@removed" in message:
                report["removed"] += 1
                continue
            report["listed"] += 1
            if message.get("@odata.type", "").startswith("#microsoft.graph.eventMessage") or message.get("isDraft"):
                report["discarded"] += 1
            elif crm.matches(addresses(message)):
                matched_ids.append(message["id"])
            else:
                report["discarded"] += 1
        url = page.get("@odata.nextLink")
    report["loopCpuMs"] = (time.process_time() - cpu) * 1000
    report["loopWallMs"] = (time.perf_counter() - wall) * 1000
    report["matched"] = len(matched_ids)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["processCpuMs"] = (usage.ru_utime + usage.ru_stime) * 1000
    report["peakRssKb"] = peak_rss_kb()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
