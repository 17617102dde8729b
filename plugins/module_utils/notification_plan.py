# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RB-P2-003's decisions: each provider's health, the outage plan (what fails, what is rotated, the routes,
the root cause), the plan once the providers were waited for (what works again, what still fails, the routes
that remain, the channels that wait, the channels to replay) and what is left in the queue afterwards.

Pure functions, no Ansible imports (tested in tests/unit/plugins/module_utils/test_notification_plan.py);
the playbook playbooks/rb-p2-003-notification-outage.yml and the role notification_replay only wire them
(filters notification_health, notification_plan, notification_resolve_plan, notification_leftover).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ansible_collections.akig.runbooks.plugins.module_utils.notification_routes import (
    CLASS_OF_DIAGNOSIS, DEFAULT_REROUTE_ON, DIAGNOSES, PROVIDER_OF_CHANNEL, PROVIDERS, NotificationRoutesError,
    notification_routes, provider_diagnosis)

CHANNEL_OF_PROVIDER = {provider: channel for channel, provider in PROVIDER_OF_CHANNEL.items()}
PROVIDER_CHANNELS = tuple(PROVIDER_OF_CHANNEL)  # sms, email

# The root cause, one clause per failing provider: "<provider> <words>".
DIAGNOSIS_WORDS = {
    "ok": "answers",
    "outage": "is down (5xx or no connection)",
    "timeout": "does not answer in time",
    "error": "answers unexpectedly",
    "quota": "refuses for quota (429)",
    "app_credentials": "refuses the app's credentials (401/403) while the vault's work: expired or never deployed",
    "vault_credentials": "refuses the vault's credentials too: new keys are needed",
}
NO_CAUSE = "none found: both providers answer and the test sends pass"


def _loop_item(result: Mapping[str, Any]) -> Any:
    """The loop item of one registered loop result (whatever its loop_var)."""
    return result.get(result.get("ansible_loop_var") or "item")


def provider_health(checks: Any, tests: Any = (), queue_classes: Any = None) -> dict[str, dict[str, Any]]:
    """Each provider's health: provider -> {class, status, detail, test_status, diagnosis}, in PROVIDERS order.

    ``checks``: the results of akig.runbooks.provider_check, one per provider (each names its ``provider``).
    ``tests``: the registered results of the app's test sends (POST /api/notifications/test), one per channel,
    looped over ``{key: channel, value: recipient}`` items; skipped ones (no ``status``) are ignored and the first
    answer of a channel gives its provider's ``test_status`` (the app's ``json.provider_status``, else None).
    ``queue_classes``: channel -> the class counts of its recent errors (the queue's), for the diagnosis.
    """
    if not isinstance(checks, (list, tuple)):
        raise NotificationRoutesError("the provider checks must be the list of provider_check results; got %r"
                                      % (type(checks).__name__,))
    by_provider: dict[str, Mapping[str, Any]] = {}
    for result in checks:
        provider = result.get("provider") if isinstance(result, Mapping) else None
        if provider not in PROVIDERS or "class" not in result:
            raise NotificationRoutesError(
                "each provider check must be a provider_check result naming its provider (%s) and its class; got "
                "one with provider %r" % (", ".join(PROVIDERS), provider))
        by_provider.setdefault(provider, result)
    missing = [p for p in PROVIDERS if p not in by_provider]
    if missing:
        raise NotificationRoutesError("no provider check for %s: check each of %s"
                                      % (", ".join(missing), ", ".join(PROVIDERS)))
    test_status: dict[str, Any] = {}
    for result in tests if isinstance(tests, (list, tuple)) else []:
        if not isinstance(result, Mapping) or "status" not in result:
            continue  # skipped: no test send made
        item = _loop_item(result)
        channel = item.get("key") if isinstance(item, Mapping) else item
        provider = PROVIDER_OF_CHANNEL.get(channel)
        if provider and provider not in test_status:
            answer = result.get("json")
            test_status[provider] = answer.get("provider_status") if isinstance(answer, Mapping) else None
    classes = queue_classes if isinstance(queue_classes, Mapping) else {}
    out = {}
    for provider in PROVIDERS:
        check = by_provider[provider]
        status = test_status.get(provider)
        out[provider] = {
            "class": check["class"],
            "status": check.get("status"),
            "detail": check.get("detail"),
            "test_status": status,
            "diagnosis": provider_diagnosis(check["class"], status, classes.get(CHANNEL_OF_PROVIDER[provider]) or {}),
        }
    return out


def _diagnoses(health: Any) -> dict[str, str]:
    if not isinstance(health, Mapping):
        raise NotificationRoutesError("the providers' health must be a mapping provider -> {diagnosis, ...} "
                                      "(notification_health); got %r" % (type(health).__name__,))
    out = {}
    for provider in PROVIDERS:
        if provider not in health:
            raise NotificationRoutesError("the providers' health has no entry for %r; give one for each of %s"
                                          % (provider, ", ".join(PROVIDERS)))
        value = health[provider]
        diagnosis = value.get("diagnosis") if isinstance(value, Mapping) else value
        if diagnosis not in DIAGNOSES:
            raise NotificationRoutesError("the diagnosis of provider %r must be one of %s; got %r"
                                          % (provider, ", ".join(DIAGNOSES), diagnosis))
        out[provider] = diagnosis
    return out


def _classes(diagnoses: Mapping[str, str]) -> dict[str, str]:
    return {p: CLASS_OF_DIAGNOSIS.get(d, d) for p, d in diagnoses.items()}


def outage_plan(health: Any, matrix: Any, reroute_on: Any = DEFAULT_REROUTE_ON) -> dict[str, Any]:
    """What the runbook does about the providers' health (provider_health's result, or provider -> diagnosis).

    Returns ``diagnosis`` (provider -> diagnosis), ``failing`` (providers not ok: paused, banner shown),
    ``rotate`` (app_credentials: the vault's credentials are deployed), ``vault_refused`` (vault_credentials: new
    keys are needed, the run stops before the replay), ``wait_for`` (the failing providers that are not rotated:
    the runbook waits for them to answer again), ``routes``/``preavis_routes``/``unrouted`` (the fallback
    matrix for the classes, credentials for both credential diagnoses), ``mitigate_channels`` (the provider
    channels whose waiting messages are rerouted now), ``cause`` (the root-cause sentence) and ``evidence`` (one
    line per provider: its health as JSON).
    """
    diagnoses = _diagnoses(health)
    routes = notification_routes(matrix, _classes(diagnoses), reroute_on)
    failing = [p for p in PROVIDERS if diagnoses[p] != "ok"]
    evidence = []
    if isinstance(health, Mapping):
        evidence = ["%s: %s" % (p, json.dumps(v)) for p, v in health.items()]
    return {
        "diagnosis": diagnoses,
        "failing": failing,
        "rotate": [p for p in PROVIDERS if diagnoses[p] == "app_credentials"],
        "vault_refused": [p for p in PROVIDERS if diagnoses[p] == "vault_credentials"],
        "wait_for": [p for p in failing if diagnoses[p] != "app_credentials"],
        "routes": routes["routes"],
        "preavis_routes": routes["preavis_routes"],
        "unrouted": routes["unrouted"],
        "mitigate_channels": list(dict.fromkeys(list(routes["routes"]) + list(routes["preavis_routes"]))),
        "cause": "; ".join("%s %s" % (p, DIAGNOSIS_WORDS[diagnoses[p]]) for p in failing) or NO_CAUSE,
        "evidence": evidence,
    }


def _providers(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or any(p not in PROVIDERS for p in value):
        raise NotificationRoutesError("%s must be a list of providers among %s; got %r"
                                      % (name, ", ".join(PROVIDERS), value))
    return list(value)


def recovered_providers(recovered: Any) -> list[str]:
    """The providers that answer again: names, or provider_check results (``ok`` true, ``provider`` named)."""
    if recovered is None:
        return []
    if not isinstance(recovered, (list, tuple)):
        raise NotificationRoutesError("recovered must be a list of providers or of provider_check results; got %r"
                                      % (type(recovered).__name__,))
    out = []
    for item in recovered:
        if isinstance(item, Mapping):
            if item.get("ok") is not True:
                continue  # still failing, or no answer at all
            item = item.get("provider")
        if item not in PROVIDERS:
            raise NotificationRoutesError("recovered: unknown provider %r; the providers are %s"
                                          % (item, ", ".join(PROVIDERS)))
        if item not in out:
            out.append(item)
    return out


def resolve_plan(plan: Any, recovered: Any, matrix: Any, reroute_on: Any = DEFAULT_REROUTE_ON) -> dict[str, Any]:
    """The plan once the failing providers were rotated or waited for.

    ``plan``: outage_plan's result (its ``failing``, ``rotate`` and ``diagnosis`` are read); ``recovered``: the
    providers that answer again (recovered_providers). A rotated provider counts as working again (the runbook
    stops before this when the app's test send still fails with the rotated credentials).

    Returns ``back`` (rotated, then recovered: unpaused), ``still`` (failing and not back: kept paused, banner
    kept), ``routes``/``preavis_routes``/``unrouted`` (the matrix with only ``still`` failing), ``wait_channels``
    (the channels of ``still`` with no route: their messages wait), ``replay_channels`` (the provider channels
    replayed now) and ``unbanner`` (every provider works again).
    """
    if not isinstance(plan, Mapping) or any(k not in plan for k in ("failing", "rotate", "diagnosis")):
        raise NotificationRoutesError("the plan must be the result of notification_plan (failing, rotate, "
                                      "diagnosis); got %r" % (sorted(plan) if isinstance(plan, Mapping) else plan,))
    failing = _providers(plan["failing"], "plan.failing")
    rotate = _providers(plan["rotate"], "plan.rotate")
    back = rotate + [p for p in recovered_providers(recovered) if p in failing and p not in rotate]
    still = [p for p in failing if p not in back]
    classes = _classes(_diagnoses(plan["diagnosis"]))
    routes = notification_routes(matrix, {p: classes[p] if p in still else "ok" for p in PROVIDERS}, reroute_on)
    wait = [CHANNEL_OF_PROVIDER[p] for p in still if CHANNEL_OF_PROVIDER[p] not in routes["routes"]]
    return {
        "back": back,
        "still": still,
        "routes": routes["routes"],
        "preavis_routes": routes["preavis_routes"],
        "unrouted": routes["unrouted"],
        "wait_channels": wait,
        "replay_channels": [c for c in PROVIDER_CHANNELS if c not in wait],
        "unbanner": not still,
    }


def _count(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NotificationRoutesError("the queue's count of %r must be a whole number; got %r" % (key, value)) from None


def leftover(by_channel_kind: Any, wait_channels: Any = ()) -> dict[str, int]:
    """What the queue still holds after the replay (``by_channel_kind``: "channel/kind" -> undelivered count):
    ``waiting`` on the channels of ``wait_channels`` (their provider still fails, no route), ``left`` on the
    others (deliverable: should be 0)."""
    if not isinstance(by_channel_kind, Mapping):
        raise NotificationRoutesError("the queue by channel/kind must be a mapping 'channel/kind' -> count; got %r"
                                      % (by_channel_kind,))
    if isinstance(wait_channels, (str, bytes)) or not isinstance(wait_channels, (list, tuple)):
        raise NotificationRoutesError("wait_channels must be a list of channels; got %r" % (wait_channels,))
    out = {"left": 0, "waiting": 0}
    for key, value in by_channel_kind.items():
        channel = str(key).split("/", 1)[0] if "/" in str(key) else None
        out["waiting" if channel in wait_channels else "left"] += _count(value, key)
    return out
