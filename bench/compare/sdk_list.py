"""The official Microsoft Graph SDK for Python (msgraph-sdk), used as its documentation shows: a GraphServiceClient
pages a mail folder's message delta with the connector's $select and page size (Prefer header), following
odata_next_link with with_url(), and every listed message is matched against the CRM with Python sets. Prints one
JSON report line (the fields of the Rust listing client). Token in BENCH_GRAPH_TOKEN.

Only the base URL differs from production: the SDK's own HTTP client is built by GraphClientFactory with the SDK's
default middleware, pointed at microsoft-sim, and the sim's host is added to the hosts the SDK sends tokens to."""

import asyncio
import json
import os
import resource
import sys
import time
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.graph_request_adapter import options as SDK_MIDDLEWARE_OPTIONS
from msgraph_core import GraphClientFactory

from crm_match import Crm, load_spec, peak_rss_kb


class StaticToken:
    """An azure-core TokenCredential handing out the token the orchestrator obtained by signing the user in."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3000)


def client_for(base_url: str) -> GraphServiceClient:
    http = httpx.AsyncClient(base_url=f"{base_url}/v1.0", trust_env=False, timeout=120)
    http = GraphClientFactory.create_with_default_middleware(client=http, options=SDK_MIDDLEWARE_OPTIONS)
    auth = AzureIdentityAuthenticationProvider(
        StaticToken(os.environ["BENCH_GRAPH_TOKEN"]),
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=[urlsplit(base_url).hostname],
    )
    return GraphServiceClient(request_adapter=GraphRequestAdapter(auth, client=http))


def addresses(message):
    for recipient in (message.from_, message.sender):
        if recipient and recipient.email_address:
            yield recipient.email_address.address
    for recipients in (message.to_recipients, message.cc_recipients, message.bcc_recipients, message.reply_to):
        for recipient in recipients or ():
            if recipient.email_address:
                yield recipient.email_address.address


async def page_all(spec, crm, report):
    client = client_for(spec["graphBase"])
    folder = spec["path"].split("/mailFolders/")[1].split("/")[0]
    select = spec["path"].split("$select=")[1].split("&")[0].split(",")
    builder = client.me.mail_folders.by_mail_folder_id(folder).messages.delta

    def config(with_query: bool) -> RequestConfiguration:
        c = RequestConfiguration()
        c.headers.add("Prefer", f'odata.maxpagesize={spec["pageSize"]}')
        c.headers.add("Prefer", 'IdType="ImmutableId"')
        if with_query:
            c.query_parameters = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=select)
        return c

    matched = []
    page = await builder.get(request_configuration=config(True))
    while True:
        report["pages"] += 1
        for message in page.value or ():
            extra = message.additional_data or {}
            if "@removed" in extra:
                report["removed"] += 1
                continue
            report["listed"] += 1
            if (message.odata_type or "").startswith("#microsoft.graph.eventMessage") or message.is_draft:
                report["discarded"] += 1
            elif crm.matches(addresses(message)):
                matched.append(message.id)
            else:
                report["discarded"] += 1
        if not page.odata_next_link:
            break
        page = await builder.with_url(page.odata_next_link).get(request_configuration=config(False))
    report["matched"] = len(matched)


def main():
    spec = load_spec(sys.argv)
    crm = Crm(spec["crm"], spec["owner"], spec["tenantDomain"])
    report = {"client": "python-msgraph-sdk", "pages": 0, "listed": 0, "matched": 0, "discarded": 0, "removed": 0, "bytes": 0}
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(page_all(spec, crm, report))
    report["loopCpuMs"] = (time.process_time() - cpu) * 1000
    report["loopWallMs"] = (time.perf_counter() - wall) * 1000
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report["processCpuMs"] = (usage.ru_utime + usage.ru_stime) * 1000
    report["peakRssKb"] = peak_rss_kb()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
