"""The sender's own MAIL, RCPT and DATA bytes are smtplib's: the same
address quoting (a plain addr-spec as <addr>, anything else through
smtplib's quoteaddr) and the same dot-stuffing, without smtplib's address
parsing and regex on the common path."""
import smtplib

import pytest

from services.sender import smtp


class _RecordingConnection(smtplib.SMTP):
    """An smtplib client that records the commands it would send."""

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


def _command_bytes(recorded: str, smtputf8: bool) -> bytes:
    verb, _, args = recorded.partition(" ")
    return f"{verb.upper()} {args}\r\n".encode("utf-8" if smtputf8 else "ascii")


@pytest.mark.parametrize("address", ["bob@example.com", "b.o+b_1@mail.example.co.in",
                                     "x-y@[127.0.0.1]", "a b@x.com", '"a b"@x.com',
                                     "bob <bob@example.com>", "x@y@z", "बॉब@उदाहरण.भारत"])
def test_mail_and_rcpt_are_what_smtplib_sends(address):
    smtputf8 = not address.isascii()
    theirs = _RecordingConnection()
    theirs.mail(address, ["SMTPUTF8", "BODY=8BITMIME"] if smtputf8 else [])
    theirs.rcpt(address)
    assert smtp.mail_command(address, smtputf8) == _command_bytes(theirs.sent[0], smtputf8)
    assert smtp.rcpt_command(address, smtputf8) == _command_bytes(theirs.sent[1], smtputf8)


def test_an_address_with_a_line_break_is_never_sent():
    with pytest.raises(ValueError):
        smtp.rcpt_command("a@b\r\nRCPT TO:<c@d>", False)
    with pytest.raises(ValueError):
        smtp.mail_command("a@b\nDATA", False)


@pytest.mark.parametrize("message", [
    b"Subject: x\r\n\r\nhello\r\n",
    b".starts with a dot\r\n..two\r\n.\r\nmid . dot\r\n",
    b"Subject: x\r\n\r\nlast line without an end",
    b"a\n.bare LF then a dot\r\n",
    b"",
])
def test_the_message_is_dot_stuffed_as_smtplib_does(message):
    theirs = _RecordingConnection([(354, b"go")])
    theirs.data(message)
    assert smtp.dot_stuffed(message) == theirs.data_sent[0]
