"""The analytics streams name a recipient's mailbox provider, never a domain
of their own (shared/mailbox_providers.py)."""
from shared.mailbox_providers import OTHER, provider_of


def test_a_large_providers_domain_is_named_in_any_case():
    assert provider_of("gmail.com") == "gmail.com"
    assert provider_of("Outlook.COM.") == "outlook.com"
    assert provider_of("yahoo.co.jp") == "yahoo.co.jp"


def test_any_other_domain_is_other():
    for domain in ("annlee.me", "smallco.example", "mail.gmail.com.evil.example",
                   "gmail.co", "", None):
        assert provider_of(domain) == OTHER
