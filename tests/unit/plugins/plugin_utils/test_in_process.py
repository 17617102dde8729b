# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""InProcessModule: the AnsibleModule stand-in that runs a controller-side module in Ansible's worker."""

from __future__ import annotations

import sys

from ansible_collections.akig.runbooks.plugins.modules import http_health, incident_lock
from ansible_collections.akig.runbooks.plugins.plugin_utils.in_process import run_in_process, same_python

SPEC = dict(argument_spec=dict(name=dict(type="str", required=True), token=dict(type="str", no_log=True),
                               count=dict(type="int", default=3)),
            supports_check_mode=True, required_together=[("name", "token")])


def echo(module) -> None:
    module.warn("looked at %s" % module.params["name"])
    module.exit_json(changed=not module.check_mode, seen=module.params, said="the token is %s" % module.params["token"])


def test_params_are_validated_converted_and_secrets_masked_everywhere() -> None:
    result = run_in_process("akig.test", echo, SPEC, {"name": "db-1", "token": "s3cr3t-Tok", "count": "5"}, False, False)
    assert result["changed"] is True and result["warnings"] == ["looked at db-1"]
    assert result["seen"]["count"] == 5  # converted as the argument spec says
    assert "s3cr3t-Tok" not in repr(result)
    assert result["said"] == "the token is ********"
    assert result["invocation"]["module_args"]["token"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_bad_input_fails_before_the_module_runs_with_ansible_modules_message() -> None:
    ran = []
    result = run_in_process("akig.test", ran.append, SPEC, {"name": "db-1", "token": "tok-Secret-9", "bogus": 1}, False, False)
    assert ran == [] and result["failed"] is True
    assert result["msg"].startswith("Unsupported parameters for (akig.test) module: bogus.")
    result = run_in_process("akig.test", ran.append, SPEC, {"count": "many"}, False, False)
    assert ran == [] and result["failed"] is True and "name" in result["msg"]


def test_check_mode_reaches_the_module_and_a_module_without_it_is_skipped() -> None:
    assert run_in_process("akig.test", echo, SPEC, {"name": "a", "token": "t"}, True, False)["changed"] is False
    no_check = dict(SPEC, supports_check_mode=False)
    skipped = run_in_process("akig.test", echo, no_check, {"name": "a", "token": "t"}, True, False)
    assert skipped["skipped"] is True and skipped["changed"] is False


def test_the_collections_modules_run_in_process_with_their_own_checks() -> None:
    # http_health: a header value inside a URL is a secret the module adds to no_log_values itself
    result = run_in_process("akig.runbooks.http_health", http_health.execute, http_health.MODULE_KWARGS,
                            {"urls": [], "timeout": 1}, False, False)
    assert result["failed"] is True and result["msg"]
    lock = run_in_process("akig.runbooks.incident_lock", incident_lock.execute, incident_lock.MODULE_KWARGS,
                          {"environment": "lab"}, False, False)
    assert lock["failed"] is True and lock["msg"]


def test_same_python_compares_real_paths() -> None:
    assert same_python(sys.executable) is True
    assert same_python("/nonexistent/python3") is False
    assert same_python(None) is False and same_python("") is False
