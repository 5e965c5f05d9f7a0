"""The sender's own MAIL, RCPT and DATA (fast paths past smtplib's address
parsing and dot-stuffing regex) are byte for byte smtplib's."""
import smtplib

import pytest

from services.sender import smtp


class _RecordingConnection(smtplib.SMTP):
    """An SMTP client that records the commands it would send."""

    def __init__(self, replies=None):
        super().__init__()
        self.sent: list[str] = []
        self.data_sent: list[bytes] = []
        self.replies = list(replies or [])
        self.esmtp_features = {"smtputf8": ""}
        self.does_esmtp = True

    def putcmd(self, cmd, args=""):
        self.sent.append(f"{cmd} {args}")

    def send(self, s):
        self.data_sent.append(s)

    def getreply(self):
        return self.replies.pop(0) if self.replies else (250, b"ok")


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


@pytest.mark.parametrize("message", [
    b"Subject: x\r\n\r\nhello\r\n",
    b".starts with a dot\r\n..two\r\n.\r\nmid . dot\r\n",
    b"Subject: x\r\n\r\nlast line without an end",
    b"a\n.bare LF then a dot\r\n",
    b"",
])
def test_data_sends_what_smtplib_sends(message):
    ours, theirs = _RecordingConnection([(354, b"go")]), _RecordingConnection([(354, b"go")])
    assert smtp._data(ours, message) == theirs.data(message)
    assert (ours.sent, ours.data_sent) == (theirs.sent, theirs.data_sent)


def test_a_refused_data_comes_back_as_its_reply_and_sends_nothing():
    conn = _RecordingConnection([(554, b"5.7.1 no")])
    assert smtp._data(conn, b"hello\r\n") == (554, b"5.7.1 no")
    assert conn.data_sent == []
