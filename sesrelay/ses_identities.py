"""Which senders SES will accept: the verified identities of ses_identities, matched as
SES matches them.

SES's developer guide ("Creating and verifying identities"): a verified domain identity
lets mail be sent from any address of the domain and of any of its subdomains, at any
depth (example.com covers user@example.com, user@a.example.com, user@a.b.example.com); a
verified email address identity covers that one address only. Domains compare without
regard to case; an address identity's local part compares exactly, as written (SES does
not document that it folds case, so sesrelay does not assume it).
"""

from __future__ import annotations


def covers(identities: tuple[str, ...], address: str) -> bool:
    """True when one of identities (domains or addresses) lets SES send from address."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return False
    domain = domain.lower().rstrip(".")
    for identity in identities:
        if "@" in identity:
            id_local, _, id_domain = identity.rpartition("@")
            if id_local == local and id_domain.lower() == domain:
                return True
        else:
            name = identity.lower().rstrip(".")
            if domain == name or domain.endswith("." + name):
                return True
    return False
