#!/usr/bin/python
# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: http_health
short_description: Probe many HTTP health endpoints at once and report latency and error rate
version_added: 0.1.0
author: AKIG Engineering Team (@akig)
description:
  - Sends O(samples) requests to each of O(urls), up to O(concurrency) endpoints in parallel, in one task, and
    reports per endpoint whether every sample met its expectations (status in C(expect_status), top-level JSON keys
    equal to C(expect_json)), the HTTP statuses seen, nearest-rank latency percentiles and the error rate.
  - Meant for the Detect and Resolve phases of the AKIG runbooks, for example C(GET /api/health) of every backend
    (port 4000) before and after a restart.
  - A request counts as an error when it gets no response (connection refused, timeout, TLS failure) or when the
    response does not meet the expectations. Redirects are not followed; a 3xx is reported as such.
  - Every URL is checked before the first request; a malformed one fails the task without sending anything.
  - Requests go straight to the endpoint, never through a proxy from the environment (E(http_proxy) and friends).
  - The module only reads; it never reports a change and runs the same in check mode.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Probes are read-only, so check mode sends the same requests and returns the same result.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  urls:
    description:
      - The endpoints, each a URL string (C(http://host[:port]/path) or C(https://...)) or a dict with these keys.
      - C(url) (str, required) the URL.
      - C(name) (str) a label for reports; defaults to the URL.
      - C(method) (str, default V(GET)) the HTTP method.
      - C(expect_status) (list of int, default V([200])) the statuses that count as healthy.
      - C(expect_json) (dict) top-level keys of the JSON body and the values they must have (for example key C(status)
        with value C(ok)), compared as JSON values; a body that is not a JSON object does not match.
      - C(headers) (dict) request headers for this endpoint, added to O(headers). Their values are hidden from the
        output of the task.
    type: list
    elements: raw
    required: true
  headers:
    description:
      - Request headers for every endpoint, for example an C(Authorization) token. Never logged or returned.
    type: dict
  samples:
    description:
      - Requests per endpoint, sent one after the other.
    type: int
    default: 1
  interval:
    description:
      - Seconds between two samples of one endpoint.
    type: float
    default: 0
  timeout:
    description:
      - Seconds to wait for each response; a request that takes longer counts as an error (C(timeout) in RV(endpoints.statuses)).
    type: float
    default: 3
  retries:
    description:
      - Extra attempts for a request that got no response (connection error or timeout), 0.1 s apart. An HTTP error
        status is never retried. Only the last attempt counts as the sample.
    type: int
    default: 0
  concurrency:
    description:
      - How many endpoints are probed at the same time.
    type: int
    default: 8
  error_rate_threshold:
    description:
      - Share of failed requests over all endpoints (0 to 1) above which RV(breached) is V(true); a rate equal to
        it does not breach. The decision is the one of the P(akig.runbooks.error_rate_breach#filter) filter, exact.
      - Not set, the SLA policy's error-rate threshold applies (the runbook's "more than 10 %" rule).
    type: float
  fail_on_unhealthy:
    description:
      - Fail the task when an endpoint is not healthy or the error rate is above O(error_rate_threshold). The result,
        with every endpoint, is still returned.
      - With V(false) the task reports RV(healthy) and RV(breached) for a later C(assert) or C(failed_when).
    type: bool
    default: false
  validate_certs:
    description:
      - Verify TLS certificates of C(https) endpoints.
    type: bool
    default: true
notes:
  - Latency percentiles are over the requests that got an HTTP response (any status); timeouts and connection errors
    show up in RV(endpoints.errors) and RV(endpoints.statuses) instead.
seealso:
  - module: akig.runbooks.pm2
"""

EXAMPLES = r"""
- name: Check the backend of every app server before the restart
  akig.runbooks.http_health:
    # akig_backend_health_url is set per host in the inventory, e.g. http://10.0.1.21:4000/api/health
    urls: "{{ groups['backend'] | map('extract', hostvars, 'akig_backend_health_url') | list }}"
    samples: 5
    interval: 0.2
  delegate_to: localhost
  run_once: true
  register: __node_restart_health_before

- name: Refuse to go on when the backends answer with more than 10 % errors
  akig.runbooks.http_health:
    urls:
      - name: backend app-1
        url: http://10.0.1.21:4000/api/health
        expect_json:
          status: ok
      - name: backend app-2
        url: http://10.0.1.22:4000/api/health
        expect_json:
          status: ok
      - name: frontend
        url: https://app.akig.example/healthz
        expect_status: [200, 204]
    samples: 20
    interval: 0.1
    retries: 1
    # no error_rate_threshold: the SLA policy's (more than 10 % errors)
    fail_on_unhealthy: true
  delegate_to: localhost
  run_once: true

- name: Probe an admin endpoint that needs a token
  akig.runbooks.http_health:
    urls:
      - url: http://10.0.1.21:4000/api/admin/health
        headers:
          Authorization: "Bearer {{ vault_akig_admin_token }}"
  delegate_to: localhost
  register: __admin_health
"""

RETURN = r"""
healthy:
  description: Whether every endpoint met its expectations with every sample.
  returned: always
  type: bool
  sample: false
error_rate:
  description: Failed requests over all requests of all endpoints, 0 to 1.
  returned: always
  type: float
  sample: 0.05
errors:
  description: Failed requests over all endpoints.
  returned: always
  type: int
  sample: 1
requests:
  description: Requests sent (samples), over all endpoints.
  returned: always
  type: int
  sample: 20
breached:
  description: Whether RV(error_rate) is above O(error_rate_threshold).
  returned: always
  type: bool
  sample: false
latency_ms:
  description: Nearest-rank p50 and p95 and the maximum of the latencies of all endpoints, in ms; V(null) without any response.
  returned: always
  type: dict
  sample: {p50: 3.4, p95: 12.9, max: 15.2}
elapsed_s:
  description: Seconds the probes took in all.
  returned: always
  type: float
  sample: 1.08
summary:
  description: One line per endpoint for an operator or a report.
  returned: always
  type: list
  elements: str
  sample:
    - "OK   backend app-1 (http://10.0.1.21:4000/api/health): 10/10 ok, 200 x10; p50 3.1 ms, p95 5.0 ms, max 5.2 ms"
    - "FAIL backend app-2 (http://10.0.1.22:4000/api/health): 7/10 ok, 200 x7, 503 x3; p50 2.9 ms, p95 4.4 ms, max 4.4 ms;
      last problem: status 503 not in [200]"
endpoints:
  description: One entry per endpoint, in the order of O(urls).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The C(name) given, or the URL.
      type: str
    url:
      description: The URL.
      type: str
    ok:
      description: Whether every sample met the expectations.
      type: bool
    status:
      description: HTTP status of the last response, V(null) when no request got one.
      type: int
    statuses:
      description: How many samples got each status; C(timeout) and C(error) count samples without a response.
      type: dict
      sample: {"200": 7, "503": 2, "timeout": 1}
    latency_ms:
      description: Nearest-rank p50, p95 and maximum latency in ms over the samples that got a response.
      type: dict
      sample: {p50: 3.1, p95: 5.0, max: 5.2}
    error_rate:
      description: Failed samples over samples, 0 to 1.
      type: float
    errors:
      description: Failed samples.
      type: int
    samples:
      description: Samples sent.
      type: int
    json:
      description:
        - The last JSON body received, parsed; when its JSON text is longer than 4 KiB, that text cut to 4 KiB.
        - V(null) when no response had a JSON body.
      type: raw
      sample: {status: ok, db: up, redis: up}
    error:
      description: The last connection error (no response), short; V(null) when every request got a response.
      type: str
      sample: timed out
    reason:
      description: Why the last failed sample failed (status, JSON mismatch, timeout); V(null) when all were fine.
      type: str
      sample: JSON status='degraded', expected 'ok'
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.akig.runbooks.plugins.module_utils.http_health import HealthError, failure_message, run, secret_values

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = dict(
    urls=dict(type="list", elements="raw", required=True),
    headers=dict(type="dict", no_log=True),
    samples=dict(type="int", default=1),
    interval=dict(type="float", default=0),
    timeout=dict(type="float", default=3),
    retries=dict(type="int", default=0),
    concurrency=dict(type="int", default=8),
    error_rate_threshold=dict(type="float"),
    fail_on_unhealthy=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
)


# the AnsibleModule arguments, shared with the action plugin that runs the module in Ansible's worker on the controller
# (plugins/action/http_health.py); no_log=True only keeps the invocation out of syslog/journald, where the header
# values inside urls (which the argument spec cannot mark) would otherwise land; the result is returned as usual.
MODULE_KWARGS: Dict[str, Any] = dict(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, no_log=True)


def execute(module: Any) -> None:
    """The module's work on an AnsibleModule (or the in-process stand-in of plugins/plugin_utils/in_process.py)."""
    module.no_log_values.update(secret_values(module.params["urls"]))
    try:
        result = run(module.params)
    except HealthError as exc:
        module.fail_json(msg=exc.msg, changed=False)
    if module.params["fail_on_unhealthy"] and (not result["healthy"] or result["breached"]):
        module.fail_json(msg=failure_message(result, module.params["error_rate_threshold"]), **result)
    module.exit_json(**result)


def main() -> None:
    execute(AnsibleModule(**MODULE_KWARGS))


if __name__ == "__main__":
    main()
