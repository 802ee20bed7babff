"""The official Graph SDK for Python (msgraph-sdk, pinned) pages a 2,500-message folder's delta to its deltaLink,
then the calendar delta, and sends a participants `$search` on messages, against the sim, with a token MSAL
obtained from the sim."""

import asyncio
import ssl
import time
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder
from msgraph.graph_request_adapter import options as SDK_MIDDLEWARE_OPTIONS
from msgraph_core import GraphClientFactory

from signin import confidential_app, sign_in

INBOX_MESSAGES = 2500
WINDOW = ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")


class MsalTokenCredential:
    """An azure-core TokenCredential that hands out the access token MSAL acquired."""

    def __init__(self, result: dict):
        self._token = result["access_token"]
        self._expires_on = int(time.time()) + int(result["expires_in"])

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        return AccessToken(self._token, self._expires_on)


def graph_client(sim, credential) -> GraphServiceClient:
    http = httpx.AsyncClient(
        base_url=f"{sim.base_url}/v1.0",
        verify=ssl.create_default_context(cafile=sim.ca_file),
        trust_env=False,
        timeout=60,
    )
    # The SDK's own middleware options, as GraphRequestAdapter uses when it builds its client (they turn
    # `/users/me-token-to-replace` into `/me`); only the base URL and the trusted CA differ.
    http = GraphClientFactory.create_with_default_middleware(client=http, options=SDK_MIDDLEWARE_OPTIONS)
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=["https://graph.microsoft.com/.default"],
        # The SDK only sends tokens to hosts it trusts; the sim is one more.
        allowed_hosts=[urlsplit(sim.base_url).hostname],
    )
    return GraphServiceClient(request_adapter=GraphRequestAdapter(auth, client=http))


def page_size(n: int) -> RequestConfiguration:
    config = RequestConfiguration()
    config.headers.add("Prefer", f"odata.maxpagesize={n}")
    return config


async def inbox_delta(client: GraphServiceClient):
    builder = client.me.mail_folders.by_mail_folder_id("inbox").messages.delta
    page = await builder.get(request_configuration=page_size(200))
    ids, pages = [], 1
    while True:
        ids.extend(m.id for m in page.value)
        if not page.odata_next_link:
            return ids, pages, page.odata_delta_link
        assert page.odata_delta_link is None
        page = await builder.with_url(page.odata_next_link).get(request_configuration=page_size(200))
        pages += 1


async def calendar_delta(client: GraphServiceClient):
    builder = client.me.calendar_view.delta
    query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(start_date_time=WINDOW[0], end_date_time=WINDOW[1])
    config = page_size(2)
    config.query_parameters = query
    page = await builder.get(request_configuration=config)
    events, pages = [], 1
    while True:
        events.extend(page.value)
        if not page.odata_next_link:
            return events, pages, page.odata_delta_link
        page = await builder.with_url(page.odata_next_link).get(request_configuration=page_size(2))
        pages += 1


def test_message_delta_then_calendar_delta(sim):
    _, _, result = sign_in(sim, confidential_app(sim))
    client = graph_client(sim, MsalTokenCredential(result))

    ids, pages, delta_link = asyncio.run(inbox_delta(client))
    assert len(ids) == INBOX_MESSAGES
    assert len(set(ids)) == INBOX_MESSAGES, "no duplicates"
    assert pages == INBOX_MESSAGES // 200 + 1
    assert delta_link and "$deltatoken=" in delta_link

    events, pages, delta_link = asyncio.run(calendar_delta(graph_client(sim, MsalTokenCredential(result))))
    assert delta_link and "$deltatoken=" in delta_link
    # Weekly Mondays 7-28 December (the 14th moved to the 15th, the 21st cancelled) and a kick-off meeting.
    assert len(events) == 4
    assert pages == 2
    series = [e for e in events if e.series_master_id]
    assert sorted(e.type.value for e in series) == ["exception", "occurrence", "occurrence"]
    assert len({e.series_master_id for e in series}) == 1
    moved = next(e for e in series if e.type.value == "exception")
    assert moved.subject == "Pipeline review (moved)"
    assert moved.start.date_time == "2026-12-15T17:00:00.0000000" and moved.start.time_zone == "UTC"
    assert moved.original_start.isoformat() == "2026-12-14T17:00:00+00:00"
    kickoff = next(e for e in events if e.subject == "Kick-off with Northwind")
    assert kickoff.type.value == "singleInstance"
    assert kickoff.online_meeting.join_url.startswith("https://teams.microsoft.com/l/meetup-join/")
    assert kickoff.is_organizer is False
    assert len({e.id for e in events}) == 4


PARTY_FIELDS = ["from", "toRecipients", "ccRecipients", "bccRecipients"]


def addresses(message) -> set:
    """The lower-cased addresses of a message's from, to, cc and bcc (what `participants:` searches)."""
    found = set()
    if message.from_ and message.from_.email_address and message.from_.email_address.address:
        found.add(message.from_.email_address.address.lower())
    for field in (message.to_recipients, message.cc_recipients, message.bcc_recipients):
        for recipient in field or []:
            if recipient.email_address and recipient.email_address.address:
                found.add(recipient.email_address.address.lower())
    return found


async def every_page(builder, config):
    page = await builder.get(request_configuration=config)
    items, pages = list(page.value), 1
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get()
        items.extend(page.value)
        pages += 1
    return items, pages


async def listed_and_searched(client: GraphServiceClient):
    builder = client.me.messages
    listing = RequestConfiguration(
        query_parameters=MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            select=["id", "sentDateTime", *PARTY_FIELDS], top=1000
        )
    )
    everything, _ = await every_page(builder, listing)
    # An external address on a handful of messages: the CRM contact the connector would look for.
    counts = {}
    for message in everything:
        for address in addresses(message):
            if not address.endswith("@contoso.com"):
                counts[address] = counts.get(address, 0) + 1
    contact = max((n, a) for a, n in counts.items() if 2 <= n <= 40)[1]
    expected = {m.id for m in everything if contact in addresses(m)}

    def search(kql: str, top: int) -> RequestConfiguration:
        return RequestConfiguration(
            query_parameters=MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                search=f'"{kql}"', select=["id", "sentDateTime", *PARTY_FIELDS], top=top
            )
        )

    found, pages = await every_page(builder, search(f"participants:{contact}", 5))
    owner, owner_pages = await every_page(builder, search("participants:adele@contoso.com", 250))
    return everything, contact, expected, found, pages, owner, owner_pages


def test_participants_search_through_the_sdk(sim):
    _, _, result = sign_in(sim, confidential_app(sim))
    client = graph_client(sim, MsalTokenCredential(result))
    everything, contact, expected, found, pages, owner, owner_pages = asyncio.run(listed_and_searched(client))
    assert len(everything) > INBOX_MESSAGES
    assert [m.id for m in found if contact in addresses(m)] == [m.id for m in found]
    assert {m.id for m in found} == expected, contact
    assert pages == -(-len(expected) // 5), "pages of $top=5 followed through nextLinks"
    sent = [m.sent_date_time for m in found]
    assert sent == sorted(sent, reverse=True), "newest sent first"
    # The owner is on every message: the search stops at 1,000 results (four pages of 250, no fifth).
    assert len(owner) == 1000 and owner_pages == 4
    assert len({m.id for m in owner}) == 1000
    owner_sent = [m.sent_date_time for m in owner]
    assert owner_sent == sorted(owner_sent, reverse=True)
