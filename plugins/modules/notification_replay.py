#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: notification_replay
short_description: Replay the AKIG notification queue exactly once, through fallback channels if asked
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - The replay step of runbook RB-P2-003 (SMS/e-mail provider outage). Sends the rows of
    C(notification_queue) that waited (C(pending)) or failed (C(failed)) once the provider answers
    again, exactly once per row, and reports counts by outcome.
  - Does not race the app's worker. Rows are claimed the way the worker claims them
    (C(SELECT ... FOR UPDATE SKIP LOCKED) in a short transaction, C(status='sending')), with
    C(claimed_by='replay:<run_id>'), and the claim is committed before the provider is called. The worker
    leaves C(replay:%) rows alone. Only one replay runs per database at a time (PostgreSQL advisory lock).
  - Each provider answer is written right after the call. A message whose provider keeps failing within the
    run (5xx, timeouts, repeated 429) goes back to C(pending) and is counted in RV(counts.retry_later), never lost.
  - Before sending anything, rows left in C(sending) by an earlier, interrupted replay (claimed, no recorded
    answer) are looked up in the provider's own log - Twilio's message list by recipient and time, SendGrid's
    activity feed by the C(akig_key) custom argument every replayed mail carries, the C(notification_tasks)
    row for the other channels - and recorded as sent when found, sent again only when not found. A
    C(kill -9) at any point therefore sends nothing twice.
  - O(routes) reroutes a channel (e.g. SMS to e-mail while Twilio is down). A rerouted row gets a fallback row
    (C(fallback_of) = the original, idempotency key C(<original key>:<channel>), recipient from the original's
    C(contacts)) and becomes C(rerouted). Channels C(push), C(dashboard), C(phone_call) and C(registered_mail)
    are delivered as one C(notification_tasks) row each (shown by the app or worked by the back office).
  - Provider calls are paced by a token bucket per provider (O(twilio_rate), O(sendgrid_rate)) and by the
    providers' C(Retry-After) on 429, with at most O(concurrency) calls in flight. Rows are streamed from the
    database in batches of O(batch_size); memory does not grow with the queue.
  - Progress is written as one JSON line every O(progress_every) messages to O(progress_file) (a module cannot
    stream its output); the final counts are in the result.
  - Every input is validated before anything is sent or claimed.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - akig.runbooks.postgres
attributes:
  check_mode:
    support: full
    details: Reads the queue and returns in RV(plan) what would be sent, by original channel, kind and the channel
      it would go through, and in RV(to_reconcile) the rows an earlier replay left ambiguous. Nothing is claimed,
      sent or written, and no provider is called.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - psycopg2
options:
  run_id:
    description:
      - Name of this run; rows are claimed with C(claimed_by='replay:<run_id>'). Default a UTC timestamp and a
        random suffix. 1 to 64 characters without spaces.
    type: str
  channels:
    description:
      - The queued channels to replay (the row's own channel, before O(routes)).
    type: list
    elements: str
    choices: [sms, email, push, dashboard, phone_call, registered_mail]
    default: [sms, email]
  statuses:
    description:
      - The row statuses to replay.
    type: list
    elements: str
    choices: [pending, failed]
    default: [pending, failed]
  kinds:
    description:
      - The message kinds to replay.
    type: list
    elements: str
    choices: [reminder, preavis, receipt, alert]
    default: [reminder, preavis, receipt, alert]
  routes:
    description:
      - 'Channel to use now for a queued channel, e.g. C({"sms": "email"}) while Twilio is down. Routes are
        followed (C({"sms": "email", "email": "push"}) sends SMS rows as push). An unknown channel or a cycle
        is refused before anything is sent.'
      - A row whose C(contacts) has no address for the target channel is left C(pending) and counted in
        RV(counts.skipped_no_contact).
    type: dict
    default: {}
  twilio_base_url:
    description:
      - Twilio API base URL, without C(/2010-04-01).
    type: str
    default: https://api.twilio.com
  twilio_account_sid:
    description:
      - Twilio account SID. Required when a replayed message goes through SMS.
    type: str
  twilio_auth_token:
    description:
      - Twilio auth token. Required when a replayed message goes through SMS. Never returned or logged.
    type: str
  twilio_from:
    description:
      - Sender number of the SMS. Required when a replayed message goes through SMS.
    type: str
  sendgrid_base_url:
    description:
      - SendGrid API base URL, without C(/v3).
    type: str
    default: https://api.sendgrid.com
  sendgrid_api_key:
    description:
      - SendGrid API key (scopes C(mail.send) and C(messages.read) for the reconciliation). Required when a
        replayed message goes through e-mail. Never returned or logged.
    type: str
  sendgrid_from:
    description:
      - Sender address of the mails. Required when a replayed message goes through e-mail.
    type: str
  twilio_rate:
    description:
      - Most Twilio calls per second (token bucket). Omit for no limit; 0 or less is refused.
    type: float
  sendgrid_rate:
    description:
      - Most SendGrid calls per second (token bucket). Omit for no limit; 0 or less is refused.
    type: float
  concurrency:
    description:
      - Provider calls in flight at most (threads), 1 to 64. Each thread holds one database connection.
    type: int
    default: 8
  batch_size:
    description:
      - Rows claimed per claim transaction, 1 to 10000.
    type: int
    default: 50
  max_messages:
    description:
      - Stop claiming after this many rows (0 = the whole queue).
    type: int
    default: 0
  max_attempts:
    description:
      - Calls per message within the run on 5xx or network errors (1 to 20); then the row goes back to
        C(pending). 429 answers are not counted (the run waits for their C(Retry-After)), up to 20 of them.
    type: int
    default: 5
  send_timeout:
    description:
      - Seconds to wait for a provider answer. A timeout is ambiguous; the message is looked up in the
        provider's log before it is sent again.
    type: float
    default: 10
  retry_after_max:
    description:
      - Longest wait honoured for a C(Retry-After), in seconds.
    type: float
    default: 60
  reconcile_slack:
    description:
      - Seconds before the claim time still searched in Twilio's message list (clock skew between the database
        and Twilio).
    type: float
    default: 30
  progress_file:
    description:
      - File to append a JSON progress line to every O(progress_every) messages, and a final one.
    type: path
  progress_every:
    description:
      - Messages between two progress lines.
    type: int
    default: 500
notes:
  - The role C(akig.runbooks.notification_replay) wraps this module for runbook RB-P2-003.
  - The database role needs SELECT, INSERT, UPDATE on C(notification_queue) and C(notification_tasks)
    (the C(akig_app) grants of the AKIG schema).
  - The reconciliation reads SendGrid's Email Activity API, which SendGrid rate limits (a few requests per
    minute on real accounts) and which can lag behind the send by minutes; the replay honours its 429s, and a
    row it cannot look up stays claimed for the next run rather than being resent blind.
"""

EXAMPLES = r"""
- name: Replay the SMS and e-mail queue once Twilio and SendGrid answer again
  akig.runbooks.notification_replay:
    login_host: "{{ akig_db_host }}"
    login_user: akig_app
    login_password: "{{ akig_db_password }}"
    login_db: akig_db
    twilio_account_sid: "{{ akig_twilio_account_sid }}"
    twilio_auth_token: "{{ akig_twilio_auth_token }}"
    twilio_from: "+33700000000"
    sendgrid_api_key: "{{ akig_sendgrid_api_key }}"
    sendgrid_from: notifications@akig.example
    twilio_rate: 50
    progress_file: /var/log/akig/replay-progress.jsonl
  no_log: true
  register: replay

- name: Twilio is still down - send the SMS rows by e-mail, see first what would go out
  akig.runbooks.notification_replay:
    login_host: "{{ akig_db_host }}"
    login_db: akig_db
    channels: [sms]
    routes: {sms: email}
    sendgrid_api_key: "{{ akig_sendgrid_api_key }}"
    sendgrid_from: notifications@akig.example
  check_mode: true
  no_log: true
  register: plan
"""

RETURN = r"""
run_id:
  description: The run's id; its rows carry C(claimed_by='replay:<run_id>').
  returned: always
  type: str
  sample: 20261130T170102Z-3fa2c1
claimed_by:
  description: The C(claimed_by) value of this run's rows.
  returned: always
  type: str
  sample: replay:20261130T170102Z-3fa2c1
counts:
  description: Messages by outcome.
  returned: always
  type: dict
  contains:
    sent:
      description: Delivered by this run (fallback rows included).
      type: int
    rerouted:
      description: Original rows that gave way to a fallback row.
      type: int
    reconciled_sent:
      description: Ambiguous rows of an earlier replay found in the provider's log, recorded as sent, not resent.
      type: int
    reconciled_resent:
      description: Ambiguous rows of an earlier replay not found in the provider's log, sent by this run.
      type: int
    reconciled_duplicates:
      description: Extra copies found in the provider's log for an ambiguous row (a message that went out twice
        before this run); reported, never hidden.
      type: int
    retry_later:
      description: Rows not delivered by this run (provider kept failing, refused credentials, log lookup
        impossible); they are C(pending) again, or still claimed for the next run's reconciliation.
      type: int
    failed:
      description: Rows the provider refused as invalid (4xx other than 401/403/429); now C(failed).
      type: int
    skipped_no_contact:
      description: Rows to reroute whose contacts have no address on the target channel; left as they were.
      type: int
    fallback_existed:
      description: Rows to reroute that already had a fallback row on the target channel (marked rerouted,
        nothing new sent).
      type: int
  sample: {sent: 412, rerouted: 120, reconciled_sent: 3, reconciled_resent: 1, reconciled_duplicates: 0,
           retry_later: 0, failed: 0, skipped_no_contact: 0, fallback_existed: 0}
by_channel:
  description: The same counts by channel (the original channel for C(rerouted), the sending channel otherwise).
  returned: always
  type: dict
  sample: {email: {sent: 320}, sms: {rerouted: 120, sent: 92}}
errors:
  description: Provider and lookup error texts (never a credential) with their number of occurrences.
  returned: always
  type: dict
provider_calls:
  description: Provider calls made (sends and log lookups).
  returned: always
  type: int
provider_retries:
  description: Of which repeated calls (after a 5xx, a 429 or a timeout).
  returned: always
  type: int
disabled_providers:
  description: Providers that refused the credentials during the run (their remaining rows went back to pending).
  returned: always
  type: dict
duration_s:
  description: Wall time of the run.
  returned: always
  type: float
msgs_per_s:
  description: Messages delivered per second of the run.
  returned: always
  type: float
p95_latency_ms:
  description: 95th percentile of the provider send calls' latency (null when nothing was sent).
  returned: always
  type: float
routes:
  description: The validated routes.
  returned: always
  type: dict
plan:
  description: Check mode only. What would be sent, by original channel and kind, with the channel it would go
    through (C(via)), the number of overdue rows (C(due_at) passed) and, for rerouted rows, how many have no
    address on C(via).
  returned: check mode
  type: list
  elements: dict
  sample: [{channel: sms, via: email, kind: preavis, count: 12, overdue: 3, without_contact: 0}]
would_send:
  description: Check mode only. Number of messages that would be sent.
  returned: check mode
  type: int
to_reconcile:
  description: Check mode only. Rows an earlier replay left in C(sending) that the run would reconcile first.
  returned: check mode
  type: int
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.akig.runbooks.plugins.module_utils.notification_replay import (
    CHANNELS,
    HAS_PSYCOPG2,
    KINDS,
    STATUSES,
    Replay,
    ReplayError,
)
from ansible_collections.akig.runbooks.plugins.module_utils.pg_replication import ConnectionOptions, PgError, connect
from ansible_collections.akig.runbooks.plugins.module_utils.postgres import postgres_common_argument_spec

ARGUMENT_SPEC = postgres_common_argument_spec()
ARGUMENT_SPEC.update(
    run_id=dict(type="str"),
    channels=dict(type="list", elements="str", choices=list(CHANNELS), default=["sms", "email"]),
    statuses=dict(type="list", elements="str", choices=list(STATUSES), default=["pending", "failed"]),
    kinds=dict(type="list", elements="str", choices=list(KINDS), default=list(KINDS)),
    routes=dict(type="dict", default={}),
    twilio_base_url=dict(type="str", default="https://api.twilio.com"),
    twilio_account_sid=dict(type="str"),
    twilio_auth_token=dict(type="str", no_log=True),
    twilio_from=dict(type="str"),
    sendgrid_base_url=dict(type="str", default="https://api.sendgrid.com"),
    sendgrid_api_key=dict(type="str", no_log=True),
    sendgrid_from=dict(type="str"),
    twilio_rate=dict(type="float"),
    sendgrid_rate=dict(type="float"),
    concurrency=dict(type="int", default=8),
    batch_size=dict(type="int", default=50),
    max_messages=dict(type="int", default=0),
    max_attempts=dict(type="int", default=5),
    send_timeout=dict(type="float", default=10),
    retry_after_max=dict(type="float", default=60),
    reconcile_slack=dict(type="float", default=30),
    progress_file=dict(type="path"),
    progress_every=dict(type="int", default=500),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2"))
    params = dict(module.params)
    try:
        opts = ConnectionOptions.from_params(params)
        replay = Replay(params, lambda: connect(opts, application_name="akig.runbooks.notification_replay"),
                        warn=module.warn)
        result = replay.run(check_mode=module.check_mode)
    except ReplayError as exc:
        module.fail_json(msg=exc.msg, option=exc.option)
    except PgError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
