"""Bounce and complaint messages shaped like the ones real providers send.

Each builder takes the VERP address the message was sent from and the
original message's List-Unsubscribe URL, as the send path writes them.
"""
from __future__ import annotations

import base64


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def gmail_hard_bounce(verp: str, unsubscribe_url: str) -> bytes:
    return _crlf(f"""Delivered-To: {verp}
Return-Path: <>
Received: from mail-sor-f69.google.com (mail-sor-f69.google.com [209.85.220.69])
        by mx.bounces.example.com with SMTPS id a1si;
        Tue, 12 Mar 2024 10:01:02 -0700 (PDT)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {verp}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
Message-ID: <65f08a1e.050a0220.abcd.0000.GMR@mx.google.com>
Date: Tue, 12 Mar 2024 10:01:02 -0700 (PDT)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000e3c2f30613797a11"; report-type=delivery-status

--000000000000e3c2f30613797a11
Content-Type: multipart/related; boundary="000000000000e3c9370613797a19"

--000000000000e3c9370613797a19
Content-Type: text/html; charset="UTF-8"

<html><p>Address not found</p><p>Your message wasn't delivered to <a>nobody.here@gmail.com</a> because the address couldn't be found, or is unable to receive mail.</p></html>

--000000000000e3c9370613797a19--

--000000000000e3c2f30613797a11
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; relay.example.com
Arrival-Date: Tue, 12 Mar 2024 10:01:01 -0700 (PDT)
X-Original-Message-ID: <job.123@example.com>

Final-Recipient: rfc822; nobody.here@gmail.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4023:1004::1a, the
 server for the domain gmail.com.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
 not exist. Please try double-checking the recipient's email address for typos or
 unnecessary spaces. For more information, go to
 https://support.google.com/mail/?p=NoSuchUser a1si nobody.here@gmail.com
Last-Attempt-Date: Tue, 12 Mar 2024 10:01:02 -0700 (PDT)

--000000000000e3c2f30613797a11
Content-Type: text/rfc822-headers

Return-Path: <{verp}>
From: Shop <news@example.com>
To: nobody.here@gmail.com
Subject: Spring sale
Message-ID: <job.123@example.com>
List-Unsubscribe: <{unsubscribe_url}>,
 <mailto:unsubscribe@example.com?subject=unsubscribe>
List-Unsubscribe-Post: List-Unsubscribe=One-Click

--000000000000e3c2f30613797a11--
""")


def outlook_hard_bounce(verp: str, unsubscribe_url: str) -> bytes:
    return _crlf(f"""From: postmaster@outlook.com
To: {verp}
Date: Wed, 13 Mar 2024 08:14:11 +0000
Subject: Undeliverable: Spring sale
Message-ID: <b8e0c1d2-0000-4a4a-9a9a-2f1e0b0c0d0e@DB8EUR05HT123.eop-eur05.prod.protection.outlook.com>
Content-Language: en-US
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="ce4a4f6b-3c3c-4b2b-8c8c-1a1a1a1a1a1a"
X-MS-Exchange-Message-Is-Ndr:

--ce4a4f6b-3c3c-4b2b-8c8c-1a1a1a1a1a1a
Content-Type: multipart/alternative; differences=Content-Type;
	boundary="0a0a0a0a-1111-2222-3333-444444444444"

--0a0a0a0a-1111-2222-3333-444444444444
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to gone.person@outlook.com couldn't be delivered.
gone.person wasn't found at outlook.com.

--0a0a0a0a-1111-2222-3333-444444444444--

--ce4a4f6b-3c3c-4b2b-8c8c-1a1a1a1a1a1a
Content-Type: message/delivery-status

Reporting-MTA: dns;DB8EUR05HT123.eop-eur05.prod.protection.outlook.com
Received-From-MTA: dns;relay.example.com
Arrival-Date: Wed, 13 Mar 2024 08:14:10 +0000

Final-Recipient: rfc822;gone.person@outlook.com
Action: failed
Status: 5.5.0
Diagnostic-Code: smtp;550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [DB8EUR05FT012.eop-eur05.prod.protection.outlook.com]

--ce4a4f6b-3c3c-4b2b-8c8c-1a1a1a1a1a1a
Content-Type: message/rfc822

Return-Path: <{verp}>
From: Shop <news@example.com>
To: gone.person@outlook.com
Subject: Spring sale
MIME-Version: 1.0
List-Unsubscribe: <{unsubscribe_url}>, <mailto:u@example.com>
Content-Type: text/plain; charset="utf-8"

Hello, our sale starts today.

--ce4a4f6b-3c3c-4b2b-8c8c-1a1a1a1a1a1a--
""")


def yahoo_soft_bounce(verp: str) -> bytes:
    """Mailbox full after the relay gave up retrying: failed with a 4.x.x status."""
    return _crlf(f"""From: MAILER-DAEMON@yahoo.com
To: {verp}
Subject: Failure Notice
Date: Thu, 14 Mar 2024 02:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="yh-1"

--yh-1
Content-Type: text/plain

Sorry, we were unable to deliver your message to the following address.
<full.box@yahoo.com>: Mailbox is over quota

--yh-1
Content-Type: message/delivery-status

Reporting-MTA: dns; mta1234.mail.bf1.yahoo.com

Final-Recipient: rfc822; full.box@yahoo.com
Action: failed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full <full.box@yahoo.com>

--yh-1--
""")


def delayed_notice(verp: str) -> bytes:
    return _crlf(f"""From: MAILER-DAEMON@relay.example.net
To: {verp}
Subject: Delayed Mail (still being retried)
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="d-1"

--d-1
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example.net

Final-Recipient: rfc822; slow@example.org
Action: delayed
Status: 4.4.1
Will-Retry-Until: Fri, 15 Mar 2024 02:00:00 +0000

--d-1--
""")


def yahoo_arf_complaint(verp: str, unsubscribe_url: str) -> bytes:
    return _crlf(f"""From: feedback@arf.mail.yahoo.com
To: fbl@example.com
Subject: FW: Spring sale
Date: Fri, 15 Mar 2024 09:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf-1"

--arf-1
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.25 on Fri, 15 Mar 2024.

--arf-1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <{verp}>
Original-Rcpt-To: <annoyed@yahoo.com>
Arrival-Date: Fri, 15 Mar 2024 08:55:00 +0000
Source-IP: 192.0.2.25
Reported-Domain: example.com

--arf-1
Content-Type: message/rfc822

Return-Path: <{verp}>
From: Shop <news@example.com>
To: annoyed@yahoo.com
Subject: Spring sale
List-Unsubscribe: <{unsubscribe_url}>
Content-Type: text/plain

Hello.

--arf-1--
""")


def redacted_arf_complaint(verp: str) -> bytes:
    """Providers such as Microsoft redact the recipient; only the VERP
    Return-Path of the original message is left to find the job."""
    return _crlf(f"""From: staff@hotmail.com
To: fbl@example.com
Subject: complaint about message from 192.0.2.25
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="ms-1"

--ms-1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Hotmail FBL
Version: 1

--ms-1
Content-Type: text/rfc822-headers

Return-Path: <{verp}>
From: news@example.com
To: [redacted]
Subject: Spring sale

--ms-1--
""")


def plain_text_bounce(verp: str) -> bytes:
    return _crlf(f"""From: MAILER-DAEMON@old.example.org
To: {verp}
Subject: failure notice

Hi. This is the qmail-send program at old.example.org.
I'm afraid I wasn't able to deliver your message to the following addresses.

<left@old.example.org>:
550 5.1.1 sorry, no mailbox here by that name
""")


def not_a_report() -> bytes:
    return _crlf("""From: someone@example.net
To: bounces@example.com
Subject: hello

Just saying hi.
""")


def out_of_office(verp: str, body: str, subject: str = "Automatic reply: Spring sale",
                  extra: str = "Auto-Submitted: auto-replied\n") -> bytes:
    """An auto-responder's answer to the Return-Path (RFC 3834): our VERP."""
    return _crlf(f"""From: Jane Doe <jane@customer.example>
To: {verp}
Subject: {subject}
{extra}
{body}
""")


def global_delivery_status(verp: str, action: str, status: str,
                           transfer_encoding: str = "8bit") -> bytes:
    """RFC 6533's form, for a message sent with SMTPUTF8: its fields are
    UTF-8, and the human part quotes no status code."""
    fields = _crlf(f"""Reporting-MTA: dns; mx.bücher.example

Final-Recipient: utf-8; jürgen@bücher.example
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 Postfach unbekannt: jürgen@bücher.example
""")
    if transfer_encoding == "base64":
        fields = base64.encodebytes(fields)
    return _crlf(f"""From: Mail Delivery System <MAILER-DAEMON@mx.bücher.example>
To: {verp}
Subject: Nachricht nicht zustellbar
MIME-Version: 1.0
Content-Type: multipart/report; report-type=global-delivery-status; boundary="g-1"

--g-1
Content-Type: text/plain; charset=utf-8

Ihre Nachricht an jürgen@bücher.example konnte nicht zugestellt werden.

--g-1
Content-Type: message/global-delivery-status
Content-Transfer-Encoding: {transfer_encoding}

""") + fields + b"\r\n--g-1--\r\n"
