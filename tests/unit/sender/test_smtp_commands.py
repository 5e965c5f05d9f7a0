"""The sender's own MAIL and RCPT commands (a fast path past smtplib's
address parsing) are byte for byte smtplib's."""
import smtplib

import pytest

from services.sender import smtp


class _RecordingConnection(smtplib.SMTP):
    """An SMTP client that records the commands it would send."""

    def __init__(self):
        super().__init__()
        self.sent: list[str] = []
        self.esmtp_features = {"smtputf8": ""}
        self.does_esmtp = True

    def putcmd(self, cmd, args=""):
        self.sent.append(f"{cmd} {args}")

    def getreply(self):
        return 250, b"ok"


@pytest.mark.parametrize("address", ["bob@example.com", "b.o+b_1@mail.example.co.in",
                                     "x-y@[127.0.0.1]", "a b@x.com", '"a b"@x.com',
                                     "bob <bob@example.com>", "a@b\r\nRCPT TO:<c@d>",
                                     "x@y@z", "बॉब@उदाहरण.भारत"])
def test_mail_and_rcpt_send_what_smtplib_sends(address):
    """The fast path writes exactly smtplib's command for a plain address;
    anything else is smtplib's own."""
    ours, theirs = _RecordingConnection(), _RecordingConnection()
    options = [] if address.isascii() else ["SMTPUTF8"]
    assert smtp._mail(ours, address, options) == theirs.mail(address, options)
    assert smtp._rcpt(ours, address) == theirs.rcpt(address)
    assert ours.sent == theirs.sent
