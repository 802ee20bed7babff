"""CRM matching in plain Python, as a team would write it with sets, following the connector's rules
(mail-sync's README): participants are from, sender, to, cc, bcc and reply-to; addresses trimmed and lower-cased;
the user's own address and the tenant's domain (and its subdomains) never match; a participant matches when its
address is a CRM contact or lead address, or its domain equals, or is a subdomain of, an account domain.
Drafts and meeting messages (#microsoft.graph.eventMessage*) are skipped, as the worker skips them.

Shared by plain_list.py and sdk_list.py so both match exactly alike."""

import json

FREE_MAIL = {"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "yahoo.com", "icloud.com"}


class Crm:
    def __init__(self, path: str, owner: str, tenant_domain: str):
        with open(path, "rb") as f:
            crm = json.load(f)
        self.addresses = {c["email"].strip().lower() for c in crm["contacts"] if c.get("email")}
        self.addresses |= {lead["email"].strip().lower() for lead in crm["leads"] if lead.get("email")}
        self.domains = {
            d.strip().lower() for a in crm["accounts"] for d in a.get("domains", []) if d.strip().lower() not in FREE_MAIL
        }
        self.owner = owner.strip().lower()
        self.internal = tenant_domain.strip().lower()

    def _internal(self, domain: str) -> bool:
        return domain == self.internal or domain.endswith("." + self.internal)

    def matches(self, addresses) -> bool:
        for raw in addresses:
            if not raw:
                continue
            address = raw.strip().lower()
            if address == self.owner:
                continue
            at = address.rfind("@")
            if at < 0:
                continue
            domain = address[at + 1 :]
            if self._internal(domain):
                continue
            if address in self.addresses:
                return True
            while True:
                if domain in self.domains:
                    return True
                dot = domain.find(".")
                if dot < 0:
                    break
                domain = domain[dot + 1 :]
        return False


def peak_rss_kb() -> int:
    """VmHWM of this process. Not ru_maxrss: Linux carries the parent's high-water mark into a child across fork and
    exec, so a child of a large process would report its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def load_spec(argv):
    """`--spec FILE`: the JSON the orchestrator writes (graphBase, path, pageSize, crm, owner, tenantDomain)."""
    if len(argv) != 3 or argv[1] != "--spec":
        raise SystemExit(f"usage: {argv[0]} --spec FILE")
    with open(argv[2], "rb") as f:
        return json.load(f)
