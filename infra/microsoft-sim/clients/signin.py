"""MSAL's authorization-code flow against the sim, driven headless: the authorize URL MSAL builds is followed with
requests (the sim auto-approves) and the redirect it answers is handed back to MSAL."""

from urllib.parse import parse_qsl, urlsplit

import msal
import requests

SCOPES = ["User.Read", "Mail.Read", "Calendars.Read"]


def confidential_app(sim) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.app["clientId"],
        client_credential=sim.app["clientSecret"],
        authority=f"{sim.base_url}/{sim.tenant['id']}",
        # The sim is not a Microsoft cloud MSAL knows: skip instance discovery (a call to Microsoft) and read the
        # tenant's OpenID configuration from the sim itself.
        instance_discovery=False,
    )


def sign_in(sim, app: msal.ConfidentialClientApplication, scopes=SCOPES):
    """Returns (flow, auth_response, result) of a full authorization-code flow for the world's user."""
    flow = app.initiate_auth_code_flow(scopes, redirect_uri=sim.redirect_uri, login_hint=sim.user["userPrincipalName"])
    assert "auth_uri" in flow, flow
    response = requests.get(flow["auth_uri"], allow_redirects=False, verify=sim.ca_file, timeout=30)
    assert response.status_code in (302, 303), (response.status_code, response.text[:500])
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == sim.redirect_uri, location
    auth_response = dict(parse_qsl(location.query))
    result = app.acquire_token_by_auth_code_flow(flow, auth_response)
    assert "access_token" in result, {k: v for k, v in result.items() if k not in ("access_token", "refresh_token")}
    return flow, auth_response, result
