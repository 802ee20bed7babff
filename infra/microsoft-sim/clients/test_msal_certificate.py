"""MSAL for Python with a certificate credential (private_key_jwt): the sim's client-assertion check accepts what
Microsoft's own library sends (SHA-256 thumbprint header, PS256 or RS256 as MSAL chooses) for the authorization-code
flow and a refresh, and refuses MSAL's assertion once the registered certificate is another one."""

import base64
import datetime

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from signin import sign_in


def _certificate():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "connector")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(key, cert):
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


def _register(sim, key, cert):
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = {
        "publicKey": base64.b64encode(spki).decode(),
        "thumbprintSha256": cert.fingerprint(hashes.SHA256()).hex(),
        "thumbprintSha1": cert.fingerprint(hashes.SHA1()).hex(),
    }
    url = f"{sim.base_url}/_sim/apps/{sim.app['clientId']}/certificates"
    requests.delete(url, verify=sim.ca_file, timeout=30).raise_for_status()
    requests.post(url, json=body, verify=sim.ca_file, timeout=30).raise_for_status()


def _app(sim, key, cert):
    private, public = _pem(key, cert)
    return msal.ConfidentialClientApplication(
        sim.app["clientId"],
        client_credential={"private_key": private, "public_certificate": public},
        authority=f"{sim.base_url}/{sim.tenant['id']}",
        instance_discovery=False,
    )


def test_a_certificate_credential_redeems_a_code_and_refreshes(sim):
    key, cert = _certificate()
    _register(sim, key, cert)
    app = _app(sim, key, cert)
    _, _, result = sign_in(sim, app)
    again = app.acquire_token_by_refresh_token(result["refresh_token"], scopes=["User.Read"])
    assert "access_token" in again, {k: v for k, v in again.items() if k not in ("access_token", "refresh_token")}

    # The app's certificate replaced by another: MSAL's assertion is refused as Entra refuses it.
    other_key, other_cert = _certificate()
    _register(sim, other_key, other_cert)
    refused = app.acquire_token_by_refresh_token(again["refresh_token"], scopes=["User.Read"])
    assert refused.get("error") == "invalid_client", refused
    assert refused.get("error_codes") == [700027], refused
