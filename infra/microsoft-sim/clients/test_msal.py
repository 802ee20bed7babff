"""MSAL for Python (pinned) completes the authorization-code flow and a refresh against the sim over https."""

import hashlib
import time

import requests

from signin import SCOPES, confidential_app, sign_in


def test_auth_code_flow_then_refresh_token(sim):
    app = confidential_app(sim)
    flow, auth_response, result = sign_in(sim, app)
    assert auth_response["state"] == flow["state"]
    assert auth_response.get("session_state")

    claims = result["id_token_claims"]
    tenant_id = sim.tenant["id"]
    assert claims["iss"] == f"{sim.base_url}/{tenant_id}/v2.0"
    assert claims["aud"] == sim.app["clientId"]
    assert claims["tid"] == tenant_id
    assert claims["oid"] == sim.user["id"]
    assert claims["preferred_username"] == sim.user["userPrincipalName"]
    assert claims["name"] == sim.user["displayName"]
    # MSAL sends the SHA-256 of its nonce and checks the id_token against that hash.
    assert claims["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert claims["ver"] == "2.0"
    now = time.time()
    assert claims["nbf"] <= now + 300 and claims["exp"] > now
    granted = {s.rsplit("/", 1)[-1] for s in result["scope"].split()}
    assert set(SCOPES) <= granted, result["scope"]
    assert result["token_type"] == "Bearer"

    refresh_token = result["refresh_token"]
    again = app.acquire_token_by_refresh_token(refresh_token, scopes=["User.Read", "Mail.Read"])
    assert "access_token" in again, {k: v for k, v in again.items() if k not in ("access_token", "refresh_token")}
    assert again["refresh_token"] != refresh_token, "refresh tokens rotate"

    me = requests.get(
        f"{sim.base_url}/v1.0/me",
        headers={"Authorization": f"Bearer {again['access_token']}"},
        verify=sim.ca_file,
        timeout=30,
    )
    assert me.status_code == 200, me.text
    assert me.json()["id"] == sim.user["id"]
