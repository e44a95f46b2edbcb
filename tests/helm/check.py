"""Checks the Helm chart (helm/twig-identity) and the deploy/ files.

Run through scripts/test-helm, which provides the Python packages. The chart
is linted and rendered offline with the Helm v4 SDK (helm_python); every
rendered object is validated with kubernetes-validate (strict) against the
oldest Kubernetes the chart supports and the newest one the schemas know;
then facts about the renders are asserted. Prints one line per check and
ends with `N passed, M failed`; exits non-zero on any failure.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import traceback
from pathlib import Path

try:
    import helm_python as helm
    import kubernetes_validate
    import kubernetes_validate.utils
    import yaml
    from yamllint import linter
    from yamllint.config import YamlLintConfig
except ImportError as e:  # a missing dependency fails, never skips
    print(f"tests/helm/check.py: missing dependency: {e}", file=sys.stderr)
    print("0 passed, 1 failed")
    sys.exit(1)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "twig-identity"
DEPLOY = ROOT / "deploy"
OLDEST_KUBE = "1.30"  # Chart.yaml's kubeVersion floor
NEWEST_KUBE = kubernetes_validate.utils.latest_version()
RELEASE, NAMESPACE = "twig", "identity"

# Credentials whose plain text may appear nowhere but (encoded) in a Secret.
DB_URL = "postgres://twig:db-pw-5e1f0c@db.example:5432/twig"
TOKEN = "internal-token-7b3e9a2d41c8f06e5a9b2c7d"
CREDS = {"database": {"url": DB_URL}, "auth": {"internalToken": TOKEN}}
EDGE_TOKEN = "edge-token-4c9d1e7a20b5f3869e1d0a7b"
SPLIT_CREDS = {"database": {"url": DB_URL}, "auth": {"internalToken": TOKEN, "edgeToken": EDGE_TOKEN}}
REDIS_URL = "redis://:redis-pw-93c1a7@redis.example:6379"
REDIS = {"redis": {"enabled": True, "url": REDIS_URL}}
VAULT = {"vault": {"masterKeysSecret": "twig-vault-keys"}}
SMTP_PASSWORD = "smtp-pw-81d0c4f2a9"
MAIL = {
    "mail": {
        "from": "Acme <no-reply@acme.example>",
        "linkBase": "https://app.acme.example",
        "smtp": {"host": "smtp.acme.example", "port": 2587, "username": "twig", "password": SMTP_PASSWORD},
    }
}

VALUE_SETS = {
    "default (split, sessions)": CREDS,
    "monolith": {**CREDS, **REDIS, **VAULT, "mode": "monolith", "monolith": {"replicas": 3}},
    "split, vault": {
        **SPLIT_CREDS,
        **VAULT,
        "services": {"secrets-vault": {"enabled": True, "replicas": 2}},
    },
    "split, quota on Redis, fail closed": {
        **SPLIT_CREDS,
        "redis": {"enabled": True, "url": REDIS_URL, "keyPrefix": "prod:"},
        "quota": {"defaultLimit": 600, "period": "1m", "onStoreError": "closed"},
        "services": {"quota": {"enabled": True, "replicas": 3}},
    },
    "plans": {
        **CREDS,
        "plans": {
            "defaultPlan": "gold",
            "definitions": {
                "gold": {
                    "defaultLimit": {"requests": 1000, "period": "1m"},
                    "maxCustomLimit": {"requests": 100000, "period": "1m"},
                    "features": ["ip_allowlists", "custom_limits"],
                },
                "enterprise": {"maxCustomLimit": {"requests": 5000000}},
                "free": {"features": []},
            },
        },
    },
    "split, two services": {
        **SPLIT_CREDS,
        "mode": "split",
        "services": {"api-keys": {"enabled": True, "replicas": 3}},
    },
    "split, edge in front": {
        **SPLIT_CREDS,
        "services": {
            "api-keys": {"enabled": True, "replicas": 2},
            "quota": {"enabled": True, "replicas": 1},
            "edge": {"enabled": True, "replicas": 3},
        },
    },
    # A name the chart's values do not know (a new module): only {enabled: true}.
    "split, a service the chart does not name": {
        **SPLIT_CREDS,
        "services": {"sso-federation": {"enabled": True}},
    },
    "existingSecret": {"existingSecret": "twig-creds"},
    "NetworkPolicy off": {**CREDS, "networkPolicy": {"enabled": False}},
    "namespace selector, OTLP, port 6000": {
        **CREDS,
        "server": {"port": 6000},
        "telemetry": {"otlpEndpoint": "http://otel.obs:4317"},
        "networkPolicy": {"allowFrom": {"namespaceLabels": {"team": "edge"}}},
    },
    "long release name": CREDS,
    "browser origins": {
        **CREDS,
        "server": {
            "corsOrigins": ["https://app.example.com", "http://localhost:5173"],
            "publicOrigins": ["https://id.example.com"],
        },
    },
    "metrics off": {**CREDS, "metrics": {"enabled": False}},
    "mail over SMTP with a login": {**CREDS, **MAIL},
    "metrics port 9100, scraper pods in a labelled namespace": {
        **CREDS,
        "metrics": {"port": 9100},
        "networkPolicy": {
            "metricsFrom": {
                "podLabels": {"app.kubernetes.io/name": "prometheus"},
                # null drops the default label: Helm merges maps.
                "namespaceLabels": {"kubernetes.io/metadata.name": None, "team": "obs"},
            },
        },
    },
}
LONG_RELEASE = "a-very-long-release-name-for-the-identity-back-end"

helm.disable_logging()
chart = helm.Chart.load(CHART)
_renders: dict[str, list[dict]] = {}


def render(values: dict, release: str = RELEASE) -> dict[str, str]:
    return chart.render(values, name=release, namespace=NAMESPACE, is_install=True)


def objects(label: str) -> list[dict]:
    """The rendered Kubernetes objects of one value set (cached)."""
    if label not in _renders:
        release = LONG_RELEASE if label == "long release name" else RELEASE
        out = render(VALUE_SETS[label], release)
        docs = []
        for path, text in out.items():
            if path.endswith("NOTES.txt"):
                continue
            docs += [d for d in yaml.safe_load_all(text) if d]
        _renders[label] = docs
    return _renders[label]


def of_kind(label: str, kind: str) -> list[dict]:
    return [o for o in objects(label) if o["kind"] == kind]


def pod_specs(label: str) -> list[dict]:
    return [o["spec"]["template"]["spec"] for o in objects(label) if o["kind"] in ("Deployment", "Job")]


def metrics_of(label: str) -> tuple[bool, int]:
    """(metrics.enabled, metrics.port) of one value set, with the chart's defaults."""
    m = VALUE_SETS[label].get("metrics", {})
    return m.get("enabled", True), m.get("port", 9464)


PROMETHEUS_KEYS = {"prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def expect_failure(values: dict, error: type, *fragments: str) -> None:
    """Rendering `values` must fail with `error` naming every fragment."""
    try:
        render(values)
    except error as e:
        for fragment in fragments:
            expect(fragment in str(e), f"error lacks {fragment!r}: {e}")
        return
    raise AssertionError(f"rendering {values} should have failed ({', '.join(fragments)})")


CHECKS = []


def check(name):
    def register(fn):
        CHECKS.append((name, fn))
        return fn

    return register


# --- lint -------------------------------------------------------------------


@check("yamllint: values.yaml, Chart.yaml and deploy/*.yaml (strict)")
def _():
    config = YamlLintConfig("extends: default")
    files = [CHART / "values.yaml", CHART / "Chart.yaml", DEPLOY / "compose.yaml", DEPLOY / "otel-collector.yaml"]
    problems = []
    for f in files:
        for p in linter.run(f.read_text(), config, str(f)):
            problems.append(f"{f.relative_to(ROOT)}:{p.line}:{p.column}: {p.level}: {p.message}")
    expect(not problems, "\n  ".join(problems))


for _label in VALUE_SETS:

    @check(f"helm lint --strict ({_label}) on Kubernetes {OLDEST_KUBE} and {NEWEST_KUBE}")
    def _(label=_label):
        for kube in (OLDEST_KUBE, NEWEST_KUBE):
            report = helm.lint(CHART, VALUE_SETS[label], strict=True, namespace=NAMESPACE, kube_version=f"v{kube}.0")
            bad = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
            expect(not bad, f"Kubernetes {kube}: {bad}")


# --- every rendered object is valid Kubernetes -------------------------------

for _label in VALUE_SETS:

    @check(f"render ({_label}): every object valid on Kubernetes {OLDEST_KUBE} and {NEWEST_KUBE} (strict)")
    def _(label=_label):
        objs = objects(label)
        expect(objs, "nothing rendered")
        names = [(o["kind"], o["metadata"]["name"]) for o in objs]
        expect(len(names) == len(set(names)), f"two objects share a name: {sorted(names)}")
        for obj in objs:
            for kube in (OLDEST_KUBE, NEWEST_KUBE):
                try:
                    kubernetes_validate.validate(obj, kube, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} on {kube}: {where}: {e.message}")
            name = obj["metadata"]["name"]
            expect(len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), f"bad name {name!r}")


# --- facts about the renders -------------------------------------------------


def deployments_by_component(label: str) -> dict[str, dict]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in of_kind(label, "Deployment")}


@check("split mode: one Deployment and Service per enabled service, running `serve --services <name>`")
def _():
    for label, expected in (("default (split, sessions)", {"sessions"}), ("split, two services", {"sessions", "api-keys"})):
        deps = deployments_by_component(label)
        expect(set(deps) == expected, f"{label}: Deployments for {sorted(deps)}, want {sorted(expected)}")
        for name, d in deps.items():
            (c,) = d["spec"]["template"]["spec"]["containers"]
            expect(c["args"] == ["serve", "--services", name], f"{name}: args {c['args']}")
            expect(d["metadata"]["name"] == f"{RELEASE}-twig-identity-{name}", f"name {d['metadata']['name']}")
        expect(deps["sessions"]["spec"]["replicas"] == 2, "sessions replicas")
        if "api-keys" in deps:
            expect(deps["api-keys"]["spec"]["replicas"] == 3, "api-keys replicas")
        services = {s["metadata"]["name"] for s in of_kind(label, "Service")}
        expect(services == {d["metadata"]["name"] for d in deps.values()}, f"{label}: Services {sorted(services)}")


@check("split mode: each service reaches the others at their Services, presenting the edge credential")
def _():
    deps = deployments_by_component("split, edge in front")
    expect(set(deps) == {"sessions", "api-keys", "quota", "edge"}, f"Deployments {sorted(deps)}")
    services = {s["metadata"]["name"] for s in of_kind("split, edge in front", "Service")}
    settings = {"sessions": "SESSIONS", "api-keys": "API_KEYS", "quota": "QUOTA"}
    for name, d in deps.items():
        env = env_of(d["spec"]["template"]["spec"]["containers"][0])
        for var in ("TWIG__AUTH__EDGE_TOKEN", "TWIG__REMOTE__TOKEN"):
            ref = env[var].get("valueFrom", {}).get("secretKeyRef", {})
            expect(ref.get("key") == "edge-token", f"{name}: {var} is {env[var]}")
        remotes = {k: v["value"] for k, v in env.items() if k.startswith("TWIG__REMOTE__") and k != "TWIG__REMOTE__TOKEN"}
        want = {
            f"TWIG__REMOTE__{setting}": f"http://{RELEASE}-twig-identity-{other}:50051"
            for other, setting in settings.items()
            if other != name
        }
        expect(remotes == want, f"{name}: remotes {remotes}, want {want}")
        for url in remotes.values():
            host = url.removeprefix("http://").rsplit(":", 1)[0]
            expect(host in services, f"{name}: {url} is no Service of the release")
    # One service alone calls nobody and needs no edge credential.
    (alone,) = of_kind("default (split, sessions)", "Deployment")
    env = env_of(alone["spec"]["template"]["spec"]["containers"][0])
    expect(not any(k.startswith("TWIG__REMOTE__") or k == "TWIG__AUTH__EDGE_TOKEN" for k in env), f"sessions alone: {sorted(env)}")
    err = helm.HelmRenderError
    two = {"services": {"edge": {"enabled": True, "replicas": 1}}}
    expect_failure({**CREDS, **two}, err, "auth.edgeToken is required")
    expect_failure({**CREDS, **two, "auth": {"internalToken": TOKEN, "edgeToken": "short"}}, err, "auth.edgeToken must be at least 32")
    expect_failure({**CREDS, **two, "auth": {"internalToken": TOKEN, "edgeToken": TOKEN}}, err, "must differ from auth.internalToken")
    expect_failure({"existingSecret": "x", "auth": {"internalToken": "", "edgeToken": EDGE_TOKEN}}, err, "leave auth.edgeToken empty")


@check("monolith mode: one Deployment running `serve` with monolith.replicas")
def _():
    (d,) = of_kind("monolith", "Deployment")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    expect(c["args"] == ["serve"], f"args {c['args']}")
    expect(d["spec"]["replicas"] == 3, f"replicas {d['spec']['replicas']}")
    expect(len(of_kind("monolith", "Service")) == 1, "one Service")


@check("each Service and Deployment selector picks its own pods and the gRPC port")
def _():
    for label in VALUE_SETS:
        deps = {d["metadata"]["name"]: d for d in of_kind(label, "Deployment")}
        for s in of_kind(label, "Service"):
            d = deps[s["metadata"]["name"]]
            pod_labels = d["spec"]["template"]["metadata"]["labels"]
            for selector in (s["spec"]["selector"], d["spec"]["selector"]["matchLabels"]):
                expect(selector.items() <= pod_labels.items(), f"{label}: selector {selector} misses the pods")
            others = [o for o in deps.values() if o is not d]
            for o in others:
                other_labels = o["spec"]["template"]["metadata"]["labels"]
                expect(not s["spec"]["selector"].items() <= other_labels.items(), f"{label}: Service also picks {o['metadata']['name']}")
            (port,) = [p for p in s["spec"]["ports"] if p["name"] == "grpc"]
            expect(port["targetPort"] == "grpc", f"{label}: targetPort {port['targetPort']}")
            expect(port["port"] == 50051, f"{label}: gRPC Service port {port['port']}")


@check("probes: startup, readiness and liveness are native gRPC probes on the listening port")
def _():
    for label in VALUE_SETS:
        port = VALUE_SETS[label].get("server", {}).get("port", 50051)
        for d in of_kind(label, "Deployment"):
            (c,) = d["spec"]["template"]["spec"]["containers"]
            want = [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
            enabled, metrics_port = metrics_of(label)
            if enabled:
                want.append({"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"})
            expect(c["ports"] == want, f"{label}: ports {c['ports']}, want {want}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                expect(p is not None, f"{label}: {probe} missing")
                expect(p.get("grpc") == {"port": port}, f"{label}: {probe} is {p}")
                expect(not {"httpGet", "tcpSocket", "exec"} & p.keys(), f"{label}: {probe} is not gRPC only")


@check("every container listens on 0.0.0.0:<port> with JSON logs")
def _():
    for label in VALUE_SETS:
        port = VALUE_SETS[label].get("server", {}).get("port", 50051)
        for spec in pod_specs(label):
            for c in spec["containers"]:
                env = env_of(c)
                expect(env["TWIG__SERVER__LISTEN"].get("value") == f"0.0.0.0:{port}", f"{label}: listen {env['TWIG__SERVER__LISTEN']}")
                expect(env["TWIG__TELEMETRY__JSON_LOGS"].get("value") == "true", f"{label}: JSON logs off")


@check("OTEL_EXPORTER_OTLP_ENDPOINT is set only when telemetry.otlpEndpoint is")
def _():
    for label in VALUE_SETS:
        want = VALUE_SETS[label].get("telemetry", {}).get("otlpEndpoint")
        for spec in pod_specs(label):
            got = env_of(spec["containers"][0]).get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value")
            expect(got == want, f"{label}: endpoint {got!r}, want {want!r}")


@check("security: non-root, read-only root, no capabilities, no token mount, resources set")
def _():
    for label in VALUE_SETS:
        for spec in pod_specs(label):
            expect(spec["securityContext"].get("runAsNonRoot") is True, f"{label}: runAsNonRoot")
            expect(spec.get("automountServiceAccountToken") is False, f"{label}: service account token mounted")
            for c in spec["containers"]:
                sc = c["securityContext"]
                expect(sc.get("readOnlyRootFilesystem") is True, f"{label}: root file system writable")
                expect(sc.get("allowPrivilegeEscalation") is False, f"{label}: privilege escalation")
                expect(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{label}: capabilities {sc.get('capabilities')}")
                res = c.get("resources", {})
                expect(res.get("requests") and res.get("limits"), f"{label}: resources {res}")


@check("credentials: only in a Secret (base64), containers read them through secretKeyRef")
def _():
    for label in VALUE_SETS:
        secret_name = VALUE_SETS[label].get("existingSecret")
        for obj in objects(label):
            text = json.dumps(obj)
            redis = VALUE_SETS[label].get("redis", {}).get("enabled", False)
            if obj["kind"] != "Secret":
                plain = any(secret in text for secret in (DB_URL, TOKEN, EDGE_TOKEN, REDIS_URL, SMTP_PASSWORD))
                expect(not plain, f"{label}: plain credential in {obj['kind']}")
            else:
                expect(not obj.get("stringData"), f"{label}: stringData in {obj['metadata']['name']}")
                data = {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
                expected = {"database-url": DB_URL, "internal-token": TOKEN}
                if VALUE_SETS[label].get("auth", {}).get("edgeToken"):
                    expected["edge-token"] = EDGE_TOKEN
                if redis:
                    expected["redis-url"] = REDIS_URL
                if VALUE_SETS[label].get("mail", {}).get("smtp", {}).get("username"):
                    expected["smtp-password"] = SMTP_PASSWORD
                expect(data == expected, f"{label}: Secret data {sorted(data)}")
        for spec in pod_specs(label):
            env = env_of(spec["containers"][0])
            refs = [("DATABASE_URL", "database-url"), ("TWIG__AUTH__INTERNAL_TOKEN", "internal-token")]
            if VALUE_SETS[label].get("redis", {}).get("enabled", False):
                refs.append(("REDIS_URL", "redis-url"))
            else:
                expect("REDIS_URL" not in env, f"{label}: REDIS_URL without redis.enabled")
            for var, key in refs:
                ref = env[var].get("valueFrom", {}).get("secretKeyRef", {})
                expect("value" not in env[var] and ref.get("key") == key, f"{label}: {var} is {env[var]}")
                if secret_name:
                    expect(ref["name"] == secret_name, f"{label}: {var} reads {ref['name']}")


@check("mail: SMTP settings from values, the password through the Secret; none without mail.smtp.host; bad combinations fail rendering")
def _():
    for label in VALUE_SETS:
        for spec in pod_specs(label):
            env = env_of(spec["containers"][0])
            if label != "mail over SMTP with a login":
                expect(not any(k.startswith("TWIG__MAIL__") for k in env), f"{label}: mail env without smtp.host")
                continue
            values = {k: v.get("value") for k, v in env.items() if k.startswith("TWIG__MAIL__")}
            expect(
                values
                == {
                    "TWIG__MAIL__FROM": "Acme <no-reply@acme.example>",
                    "TWIG__MAIL__LINK_BASE": "https://app.acme.example",
                    "TWIG__MAIL__SMTP__HOST": "smtp.acme.example",
                    "TWIG__MAIL__SMTP__TLS": "starttls",
                    "TWIG__MAIL__SMTP__PORT": "2587",
                    "TWIG__MAIL__SMTP__USERNAME": "twig",
                    "TWIG__MAIL__SMTP__PASSWORD": None,
                },
                f"{label}: {values}",
            )
            ref = env["TWIG__MAIL__SMTP__PASSWORD"]["valueFrom"]["secretKeyRef"]
            expect(ref["key"] == "smtp-password", f"{label}: the SMTP password reads {ref}")
    err = helm.HelmRenderError
    host_only = {"mail": {"smtp": {"host": "smtp.acme.example"}}}
    expect_failure({**CREDS, **host_only}, err, "mail.from", "mail.linkBase")
    no_password = {"mail": {**MAIL["mail"], "smtp": {"host": "smtp.acme.example", "username": "twig"}}}
    expect_failure({**CREDS, **no_password}, err, "mail.smtp.password")
    no_user = {"mail": {**MAIL["mail"], "smtp": {"host": "smtp.acme.example", "password": SMTP_PASSWORD}}}
    expect_failure({**CREDS, **no_user}, err, "mail.smtp.username")
    expect_failure({"existingSecret": "x", **MAIL}, err, "leave mail.smtp.password empty")
    expect_failure({**CREDS, "mail": {"smtp": {"tls": "ssl3"}}}, helm.HelmValuesError, "/mail/smtp/tls")
    # With existingSecret the password is read from its key.
    out = render({"existingSecret": "creds", "mail": {**MAIL["mail"], "smtp": {"host": "h", "username": "u"}}})
    expect("smtp-password" in json.dumps(list(out.values())), "existingSecret: no smtp-password key read")


@check("quota: counts in Redis when redis.enabled, else in memory; limits and policy from values")
def _():
    for label in VALUE_SETS:
        redis = VALUE_SETS[label].get("redis", {}).get("enabled", False)
        for d in of_kind(label, "Deployment"):
            env = env_of(d["spec"]["template"]["spec"]["containers"][0])
            store = env["TWIG__QUOTA__STORE"]["value"]
            expect(store == ("redis" if redis else "memory"), f"{label}: quota store {store}")
    env = env_of(of_kind("split, quota on Redis, fail closed", "Deployment")[0]["spec"]["template"]["spec"]["containers"][0])
    values = {k: env[k].get("value") for k in env if k.startswith(("TWIG__QUOTA__", "TWIG__REDIS__"))}
    expect(
        values
        == {
            "TWIG__QUOTA__STORE": "redis",
            "TWIG__QUOTA__DEFAULT_LIMIT": "600",
            "TWIG__QUOTA__PERIOD": "1m",
            "TWIG__QUOTA__ON_STORE_ERROR": "closed",
            "TWIG__REDIS__KEY_PREFIX": "prod:",
        },
        f"quota settings {values}",
    )


@check("plans: the default plan everywhere; each plan's values as TWIG__PLANS__<NAME>__… variables")
def _():
    for label in VALUE_SETS:
        for d in of_kind(label, "Deployment"):
            env = env_of(d["spec"]["template"]["spec"]["containers"][0])
            plan = env["TWIG__PLANS__DEFAULT_PLAN"]["value"]
            expected = "gold" if label == "plans" else "free"
            expect(plan == expected, f"{label}: default plan {plan}")
            if label != "plans":
                extra = [k for k in env if k.startswith("TWIG__PLANS__") and k != "TWIG__PLANS__DEFAULT_PLAN"]
                expect(not extra, f"{label}: {extra}")
    env = env_of(of_kind("plans", "Deployment")[0]["spec"]["template"]["spec"]["containers"][0])
    values = {k: env[k].get("value") for k in env if k.startswith("TWIG__PLANS__")}
    expect(
        values
        == {
            "TWIG__PLANS__DEFAULT_PLAN": "gold",
            "TWIG__PLANS__GOLD__DEFAULT_LIMIT__REQUESTS": "1000",
            "TWIG__PLANS__GOLD__DEFAULT_LIMIT__PERIOD": "1m",
            "TWIG__PLANS__GOLD__MAX_CUSTOM_LIMIT__REQUESTS": "100000",
            "TWIG__PLANS__GOLD__MAX_CUSTOM_LIMIT__PERIOD": "1m",
            "TWIG__PLANS__GOLD__FEATURES": '["ip_allowlists","custom_limits"]',
            "TWIG__PLANS__ENTERPRISE__MAX_CUSTOM_LIMIT__REQUESTS": "5000000",
            "TWIG__PLANS__FREE__FEATURES": "[]",
        },
        f"plan settings {values}",
    )


@check("browser origins: TWIG__SERVER__CORS_ORIGINS and TWIG__SERVER__PUBLIC_ORIGINS as JSON lists when set, absent otherwise")
def _():
    for label in VALUE_SETS:
        for key, var in (("corsOrigins", "TWIG__SERVER__CORS_ORIGINS"), ("publicOrigins", "TWIG__SERVER__PUBLIC_ORIGINS")):
            origins = VALUE_SETS[label].get("server", {}).get(key)
            for d in of_kind(label, "Deployment"):
                got = env_of(d["spec"]["template"]["spec"]["containers"][0]).get(var)
                if origins:
                    expect(got is not None and json.loads(got["value"]) == origins, f"{label}: {var} {got}")
                else:
                    expect(got is None, f"{label}: {var} {got}")


@check("quota on more than one replica without Redis, or Redis without a usable URL, fails rendering")
def _():
    err = helm.HelmRenderError
    expect_failure({**CREDS, **VAULT, "mode": "monolith"}, err, "more than one replica", "redis.enabled")
    many = {"services": {"quota": {"enabled": True, "replicas": 2}}}
    expect_failure({**SPLIT_CREDS, **many}, err, "more than one replica")
    render({**SPLIT_CREDS, "services": {"quota": {"enabled": True, "replicas": 1}}})
    render({**CREDS, **VAULT, "mode": "monolith", "monolith": {"replicas": 1}})
    expect_failure({**CREDS, "redis": {"enabled": True}}, err, "redis.url is required")
    expect_failure({**CREDS, "redis": {"enabled": True, "url": "http://r:6379"}}, err, "redis://")
    expect_failure({"existingSecret": "x", "redis": {"url": REDIS_URL}}, err, "leave redis.url empty")
    try:
        render({**CREDS, "redis": {"enabled": True, "url": "http://:secret-pw@r"}})
    except err as e:
        expect("secret-pw" not in str(e), "the error repeats the URL")


@check("vault: pods running it mount vault.masterKeysSecret read-only and point TWIG__SECRETS_VAULT__MASTER_KEYS_DIR at it; others do not")
def _():
    for label in VALUE_SETS:
        for d in of_kind(label, "Deployment"):
            component = d["metadata"]["labels"]["app.kubernetes.io/component"]
            spec = d["spec"]["template"]["spec"]
            container = spec["containers"][0]
            env = env_of(container)
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
            if component in ("monolith", "secrets-vault"):
                expect(env["TWIG__SECRETS_VAULT__MASTER_KEYS_DIR"]["value"] == "/etc/twig/vault-keys", f"{label}: {env}")
                expect(volumes["vault-keys"]["secret"]["secretName"] == "twig-vault-keys", f"{label}: {volumes}")
                expect(mounts["vault-keys"]["readOnly"] is True, f"{label}: {mounts}")
            else:
                expect("vault-keys" not in volumes and "TWIG__SECRETS_VAULT__MASTER_KEYS_DIR" not in env, f"{label}: {component}")
    err = helm.HelmRenderError
    expect_failure({**CREDS, **REDIS, "mode": "monolith"}, err, "vault.masterKeysSecret")
    expect_failure({**SPLIT_CREDS, "services": {"secrets-vault": {"enabled": True, "replicas": 1}}}, err, "vault.masterKeysSecret")


@check("existingSecret: the chart makes no Secret and every pod reads the operator's")
def _():
    expect(not of_kind("existingSecret", "Secret"), "a Secret was rendered")
    for d in of_kind("existingSecret", "Deployment"):
        annotations = d["spec"]["template"]["metadata"].get("annotations") or {}
        expect("checksum/secret" not in annotations, "checksum of no Secret")


@check("migration Job: pre-install/pre-upgrade hook running `migrate` (split: `--services` of the Deployments), its Secret made before it")
def _():
    for label in VALUE_SETS:
        (job,) = of_kind(label, "Job")
        ann = job["metadata"]["annotations"]
        expect(ann["helm.sh/hook"] == "pre-install,pre-upgrade", f"hook {ann['helm.sh/hook']}")
        (c,) = job["spec"]["template"]["spec"]["containers"]
        if VALUE_SETS[label].get("mode") == "monolith":
            want = ["migrate"]
        else:
            want = ["migrate", "--services", ",".join(sorted(deployments_by_component(label)))]
        expect(c["args"] == want, f"{label}: args {c['args']}, want {want}")
        expect(job["spec"]["template"]["spec"]["restartPolicy"] == "Never", "restartPolicy")
        reads = env_of(c)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
        if VALUE_SETS[label].get("existingSecret"):
            continue
        (hook_secret,) = [s for s in of_kind(label, "Secret") if s["metadata"]["name"] == reads]
        sann = hook_secret["metadata"].get("annotations", {})
        expect(sann.get("helm.sh/hook") == ann["helm.sh/hook"], f"{label}: the Job's Secret is not a hook")
        expect(int(sann["helm.sh/hook-weight"]) < int(ann.get("helm.sh/hook-weight", "0")), "Secret not before Job")
    expect(not of_kind_rendered({**CREDS, "migration": {"enabled": False}}, "Job"), "Job rendered when disabled")


def of_kind_rendered(values: dict, kind: str) -> list[dict]:
    docs = [d for p, t in render(values).items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d]
    return [d for d in docs if d["kind"] == kind]


@check("split mode: any service name runs when enabled with only {enabled: true}, sized by serviceDefaults; values.yaml names only what runs by default")
def _():
    services, defaults = chart.values["services"], chart.values["serviceDefaults"]
    expect(services == {"sessions": {"enabled": True}}, f"values.yaml services: {services}")
    expect(defaults == {"replicas": 2, "resources": {}}, f"values.yaml serviceDefaults: {defaults}")
    label = "split, a service the chart does not name"
    chart.validate_schema(VALUE_SETS[label])
    deps = deployments_by_component(label)
    expect(set(deps) == {"sessions", "sso-federation"}, f"Deployments {sorted(deps)}")
    d = deps["sso-federation"]
    name = f"{RELEASE}-twig-identity-sso-federation"
    expect(d["metadata"]["name"] == name, f"name {d['metadata']['name']}")
    expect(d["spec"]["replicas"] == 2 and deps["sessions"]["spec"]["replicas"] == 2, "replicas: not serviceDefaults.replicas")
    (c,) = d["spec"]["template"]["spec"]["containers"]
    expect(c["args"] == ["serve", "--services", "sso-federation"], f"args {c['args']}")
    expect(c["resources"] == chart.values["resources"], f"resources {c['resources']}")
    (svc,) = [s for s in of_kind(label, "Service") if s["metadata"]["name"] == name]
    expect(svc["spec"]["selector"]["app.kubernetes.io/component"] == "sso-federation", f"selector {svc['spec']['selector']}")
    # The others reach it at its Service, by the name with _ for -.
    env = env_of(deps["sessions"]["spec"]["template"]["spec"]["containers"][0])
    expect(env["TWIG__REMOTE__SSO_FEDERATION"]["value"] == f"http://{name}:50051", f"sessions: {env.get('TWIG__REMOTE__SSO_FEDERATION')}")
    # serviceDefaults size every entry that does not size itself; replicas 0 stays 0.
    sized = {
        **SPLIT_CREDS,
        "serviceDefaults": {"replicas": 4, "resources": {"limits": {"memory": "1Gi"}}},
        "services": {"sso-federation": {"enabled": True, "replicas": 1}, "api-keys": {"enabled": True, "replicas": 0, "resources": {"limits": {"memory": "2Gi"}}}},
    }
    deps = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in of_kind_rendered(sized, "Deployment")}
    got = {k: (d["spec"]["replicas"], d["spec"]["template"]["spec"]["containers"][0]["resources"]) for k, d in deps.items()}
    want = {
        "sessions": (4, {"limits": {"memory": "1Gi"}}),
        "sso-federation": (1, {"limits": {"memory": "1Gi"}}),
        "api-keys": (0, {"limits": {"memory": "2Gi"}}),
    }
    expect(got == want, f"sizes {got}, want {want}")
    # The services the templates name work from serviceDefaults too.
    err = helm.HelmRenderError
    expect_failure({**SPLIT_CREDS, "services": {"quota": {"enabled": True}}}, err, "more than one replica")
    render({**SPLIT_CREDS, "serviceDefaults": {"replicas": 1}, "services": {"quota": {"enabled": True}}})
    expect_failure({**SPLIT_CREDS, "services": {"secrets-vault": {"enabled": True}}}, err, "vault.masterKeysSecret")
    render({**CREDS, "serviceDefaults": {"replicas": 3}, "services": {"quota": {"enabled": False}, "secrets-vault": {"enabled": False}}})


@check("migration Job: `migrate --services <enabled services>` in split mode, so the binary refuses unknown names before any Deployment rolls; `migrate` in monolith")
def _():
    def job_args(values: dict) -> list[str]:
        (job,) = of_kind_rendered(values, "Job")
        (c,) = job["spec"]["template"]["spec"]["containers"]
        return c["args"]

    cases = (
        ({**CREDS}, ["migrate", "--services", "sessions"]),
        (VALUE_SETS["split, edge in front"], ["migrate", "--services", "api-keys,edge,quota,sessions"]),
        (VALUE_SETS["split, a service the chart does not name"], ["migrate", "--services", "sessions,sso-federation"]),
        ({**CREDS, "services": {"sessions": {"enabled": False}, "api-keys": {"enabled": True}}}, ["migrate", "--services", "api-keys"]),
        # Well-formed but misspelt: the schema takes it, the binary refuses it.
        ({**CREDS, "services": {"sessions": {"enabled": False}, "sesions": {"enabled": True}}}, ["migrate", "--services", "sesions"]),
        (VALUE_SETS["monolith"], ["migrate"]),
        ({**VALUE_SETS["monolith"], "services": {"sso-federation": {"enabled": True}}}, ["migrate"]),
    )
    for values, want in cases:
        got = job_args(values)
        expect(got == want, f"{values.get('services')}: args {got}, want {want}")
    # No hook: nothing checks the names before the pods, whose `serve --services` does.
    off = {**VALUE_SETS["split, a service the chart does not name"], "migration": {"enabled": False}}
    expect(not of_kind_rendered(off, "Job"), "Job rendered when disabled")
    args = sorted(d["spec"]["template"]["spec"]["containers"][0]["args"] for d in of_kind_rendered(off, "Deployment"))
    expect(args == [["serve", "--services", "sessions"], ["serve", "--services", "sso-federation"]], f"args {args}")


@check("NetworkPolicy: the gRPC port only from the release and labelled clients")
def _():
    expect(not of_kind("NetworkPolicy off", "NetworkPolicy"), "rendered while disabled")
    for label, port in (("default (split, sessions)", 50051), ("namespace selector, OTLP, port 6000", 6000)):
        (np,) = of_kind(label, "NetworkPolicy")
        spec = np["spec"]
        expect(spec["policyTypes"] == ["Ingress"], f"policyTypes {spec['policyTypes']}")
        expect(spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "twig-identity", "app.kubernetes.io/instance": RELEASE}, "podSelector")
        rule = spec["ingress"][0]
        expect(rule["ports"] == [{"port": port, "protocol": "TCP"}], f"ports {rule['ports']}")
        clients = [p for p in rule["from"] if p.get("podSelector", {}).get("matchLabels") == {"twig-identity-client": "true"}]
        expect(len(clients) == 1, f"client peer missing: {rule['from']}")
        ns = clients[0].get("namespaceSelector")
        if label.startswith("namespace"):
            expect(ns == {"matchLabels": {"team": "edge"}}, f"namespaceSelector {ns}")
        else:
            expect(ns is None, f"namespaceSelector {ns} by default")
        expect(all(p.keys() <= {"podSelector", "namespaceSelector"} for p in rule["from"]), "ipBlock peer")
    # podLabels: null admits any pod of the selected namespaces.
    allow_any = {"podLabels": None, "namespaceLabels": {"team": "edge"}}
    (np,) = of_kind_rendered({**CREDS, "networkPolicy": {"allowFrom": allow_any}}, "NetworkPolicy")
    peer = np["spec"]["ingress"][0]["from"][1]
    expect(peer == {"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "edge"}}}, f"peer {peer}")


# --- metrics (the admin port) ------------------------------------------------


@check("metrics: every serving container sets TWIG__SERVER__ADMIN_LISTEN, 0.0.0.0 only when enabled")
def _():
    for label in VALUE_SETS:
        enabled, port = metrics_of(label)
        want = f"{'0.0.0.0' if enabled else '127.0.0.1'}:{port}"
        deps = of_kind(label, "Deployment")
        expect(deps, f"{label}: no Deployment")
        for d in deps:
            for c in d["spec"]["template"]["spec"]["containers"]:
                got = env_of(c).get("TWIG__SERVER__ADMIN_LISTEN", {})
                expect(got == {"name": "TWIG__SERVER__ADMIN_LISTEN", "value": want}, f"{label}: {got}, want {want}")
                listen = env_of(c)["TWIG__SERVER__LISTEN"]["value"]
                expect(listen.rsplit(":", 1)[1] != str(port), f"{label}: admin and gRPC share port {port}")


@check("metrics: the migration Job sets TWIG__SERVER__ADMIN_LISTEN=127.0.0.1:0 and has no ports")
def _():
    for label in VALUE_SETS:
        (job,) = of_kind(label, "Job")
        (c,) = job["spec"]["template"]["spec"]["containers"]
        got = env_of(c).get("TWIG__SERVER__ADMIN_LISTEN", {}).get("value")
        expect(got == "127.0.0.1:0", f"{label}: Job admin listen {got!r}")
        expect(not c.get("ports"), f"{label}: Job ports {c.get('ports')}")
        annotations = job["spec"]["template"]["metadata"].get("annotations") or {}
        expect(not PROMETHEUS_KEYS & annotations.keys(), f"{label}: Job pods are scraped")


@check("metrics enabled: container port, Service port and prometheus.io pod annotations")
def _():
    labels = [label for label in VALUE_SETS if metrics_of(label)[0]]
    expect("default (split, sessions)" in labels and "monolith" in labels, f"value sets with metrics: {labels}")
    for label in labels:
        _, port = metrics_of(label)
        deps = {d["metadata"]["name"]: d for d in of_kind(label, "Deployment")}
        for d in deps.values():
            (c,) = d["spec"]["template"]["spec"]["containers"]
            ports = [p for p in c["ports"] if p["name"] == "metrics"]
            expect(ports == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}], f"{label}: container ports {c['ports']}")
            ann = d["spec"]["template"]["metadata"]["annotations"]
            want = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
            got = {k: v for k, v in ann.items() if k in PROMETHEUS_KEYS}
            expect(got == want, f"{label}: annotations {got}, want {want}")
        services = of_kind(label, "Service")
        expect(len(services) == len(deps), f"{label}: {len(services)} Services")
        for s in services:
            ports = [p for p in s["spec"]["ports"] if p["name"] == "metrics"]
            expect(len(ports) == 1, f"{label}: Service ports {s['spec']['ports']}")
            (mp,) = ports
            expect(mp["port"] == port and mp["targetPort"] == "metrics" and mp["protocol"] == "TCP", f"{label}: {mp}")
            expect(len({p["port"] for p in s["spec"]["ports"]}) == len(s["spec"]["ports"]), f"{label}: Service port clash")


@check("metrics disabled: no metrics port on containers or Services, no prometheus.io annotations")
def _():
    for d in of_kind("metrics off", "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        expect([p["name"] for p in c["ports"]] == ["grpc"], f"container ports {c['ports']}")
        ann = d["spec"]["template"]["metadata"].get("annotations") or {}
        expect(not PROMETHEUS_KEYS & ann.keys(), f"annotations {ann}")
        expect("checksum/secret" in ann, f"checksum/secret lost: {ann}")
    for s in of_kind("metrics off", "Service"):
        expect([p["name"] for p in s["spec"]["ports"]] == ["grpc"], f"Service ports {s['spec']['ports']}")
    # With metrics off, service.port may equal metrics.port (no Service port for it).
    off = {**CREDS, "metrics": {"enabled": False, "port": 50051}, "server": {"port": 6000}}
    for s in of_kind_rendered(off, "Service"):
        expect([p["port"] for p in s["spec"]["ports"]] == [50051], f"Service ports {s['spec']['ports']}")


@check("metrics: podAnnotations may override the prometheus.io annotations, keys never doubled")
def _():
    values = {**CREDS, "podAnnotations": {"prometheus.io/path": "/other", "team": "identity"}}
    out = render(values)
    text = out[f"{CHART.name}/templates/deployment.yaml"]
    expect(text.count("prometheus.io/path") == 1, "prometheus.io/path twice")
    (d,) = [o for o in yaml.safe_load_all(text) if o and o["kind"] == "Deployment"]
    ann = d["spec"]["template"]["metadata"]["annotations"]
    expect(ann["prometheus.io/path"] == "/other" and ann["team"] == "identity", f"annotations {ann}")
    expect(ann["prometheus.io/scrape"] == "true" and "checksum/secret" in ann, f"annotations {ann}")


@check("NetworkPolicy: the metrics port in a rule of its own, only from networkPolicy.metricsFrom")
def _():
    cases = (
        ("default (split, sessions)", 9464, {"podSelector": {}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}),
        ("monolith", 9464, {"podSelector": {}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}),
        (
            "metrics port 9100, scraper pods in a labelled namespace",
            9100,
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}, "namespaceSelector": {"matchLabels": {"team": "obs"}}},
        ),
    )
    for label, port, peer in cases:
        (np,) = of_kind(label, "NetworkPolicy")
        rules = np["spec"]["ingress"]
        expect(len(rules) == 2, f"{label}: {len(rules)} ingress rules")
        grpc_rule, metrics_rule = rules
        expect(all(p["port"] != port for p in grpc_rule["ports"]), f"{label}: gRPC rule opens the metrics port")
        expect(metrics_rule["ports"] == [{"port": port, "protocol": "TCP"}], f"{label}: metrics rule ports {metrics_rule['ports']}")
        expect(metrics_rule["from"] == [peer], f"{label}: metrics rule from {metrics_rule['from']}, want [{peer}]")
    # Metrics off: the gRPC rule alone.
    (np,) = of_kind("metrics off", "NetworkPolicy")
    expect(len(np["spec"]["ingress"]) == 1, f"metrics off: rules {np['spec']['ingress']}")
    expect(np["spec"]["ingress"][0]["ports"] == [{"port": 50051, "protocol": "TCP"}], "metrics off: gRPC rule")
    # Pod labels only: scrapers in this release's namespace; extraFrom stays out of the metrics rule.
    values = {
        **CREDS,
        "networkPolicy": {
            "metricsFrom": {"podLabels": {"app": "prometheus"}, "namespaceLabels": None},
            "extraFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
        },
    }
    (np,) = of_kind_rendered(values, "NetworkPolicy")
    grpc_rule, metrics_rule = np["spec"]["ingress"]
    expect(metrics_rule["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}], f"from {metrics_rule['from']}")
    expect({"ipBlock": {"cidr": "10.0.0.0/8"}} in grpc_rule["from"], "extraFrom missing from the gRPC rule")
    # Without the null, Helm merges the labels into the default one (documented in values.yaml).
    (np,) = of_kind_rendered({**CREDS, "networkPolicy": {"metricsFrom": {"namespaceLabels": {"team": "obs"}}}}, "NetworkPolicy")
    ns = np["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]
    expect(ns == {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}, f"merged namespaceLabels {ns}")
    # Metrics on, NetworkPolicy off: no policy at all.
    expect(not of_kind_rendered({**CREDS, "networkPolicy": {"enabled": False}}, "NetworkPolicy"), "rendered while disabled")


@check("metrics.port equal to server.port (always) or service.port (when enabled) fails rendering")
def _():
    err = helm.HelmRenderError
    expect_failure({**CREDS, "metrics": {"port": 50051}}, err, "metrics.port must differ from server.port")
    expect_failure({**CREDS, "metrics": {"enabled": False, "port": 50051}}, err, "metrics.port must differ from server.port")
    expect_failure({**CREDS, "server": {"port": 6000}, "metrics": {"port": 50051}}, err, "metrics.port must differ from service.port")


@check("missing or unusable database and token settings fail rendering with a clear message")
def _():
    err = helm.HelmRenderError
    expect_failure({}, err, "database.url is required", "existingSecret")
    expect_failure({"auth": CREDS["auth"]}, err, "database.url is required")
    expect_failure({"database": CREDS["database"]}, err, "auth.internalToken is required")
    expect_failure({**CREDS, "database": {"url": "sqlite://./twig.db"}}, err, "postgres://")
    expect_failure({**CREDS, "auth": {"internalToken": "short"}}, err, "at least 32 characters")
    expect_failure({**CREDS, "existingSecret": "x"}, err, "leave database.url and auth.internalToken empty")
    only_off = {name: {"enabled": False} for name in chart.values["services"]}
    expect_failure({**CREDS, "services": only_off}, err, "no entry of services has enabled: true")
    try:
        render({**CREDS, "database": {"url": "sqlite://./twig.db"}})
    except err as e:
        expect("sqlite://./twig.db" not in str(e), "the error repeats the URL")


@check("values.schema.json rejects bad values (and accepts every value set above)")
def _():
    for label, values in VALUE_SETS.items():
        chart.validate_schema(values)
    bad = [
        ({"mode": "bogus"}, "/mode"),
        ({"services": {"sessions": {"replicas": "two"}}}, "/services/sessions/replicas"),
        ({"monolith": {"replicas": -1}}, "/monolith/replicas"),
        # Names: lower-case words joined by - (whether the binary has them is
        # its own check, at the migration hook).
        ({"services": {"api_keys": {"enabled": True}}}, "api_keys"),
        ({"services": {"Sessions": {"enabled": True}}}, "Sessions"),
        ({"services": {"sso--federation": {"enabled": True}}}, "sso--federation"),
        ({"services": {"-edge": {"enabled": True}}}, "-edge"),
        ({"services": {"edge-": {"enabled": True}}}, "edge-"),
        ({"services": {"vault2": {"enabled": True}}}, "vault2"),
        ({"services": {"sso federation": {"enabled": True}}}, "sso federation"),
        ({"services": {"edge": {"replicas": 1}}}, "enabled"),
        ({"services": {"edge": {"enabled": True, "replica": 1}}}, "replica"),
        ({"serviceDefaults": {"replicas": -1}}, "/serviceDefaults/replicas"),
        ({"serviceDefaults": {"replicas": "2"}}, "/serviceDefaults/replicas"),
        ({"serviceDefaults": {"replicas": 2, "cpu": "1"}}, "cpu"),
        ({"serviceDefaults": {"replicas": 2, "resources": {"cpu": "1"}}}, "cpu"),
        ({"services": {"quota": {"enabled": "yes"}}}, "/services/quota/enabled"),
        ({"networkPolicy": {"enabled": "true"}}, "/networkPolicy/enabled"),
        ({"server": {"port": 70000}}, "/server/port"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"replicaCount": 3}, "replicaCount"),
        ({"database": {"url": 5}}, "/database/url"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"metrics": {"port": 0}}, "/metrics/port"),
        ({"metrics": {"port": "9464"}}, "/metrics/port"),
        ({"metrics": {"enabled": "true"}}, "/metrics/enabled"),
        ({"metrics": {"enabled": True, "path": "/m"}}, "path"),
        ({"networkPolicy": {"metricsFrom": {"podLabels": {"app": 1}}}}, "/networkPolicy/metricsFrom/podLabels/app"),
        ({"networkPolicy": {"metricsFrom": {"ipBlock": {"cidr": "10.0.0.0/8"}}}}, "ipBlock"),
        ({"redis": {"enabled": "yes"}}, "/redis/enabled"),
        ({"quota": {"defaultLimit": 0}}, "/quota/defaultLimit"),
        ({"quota": {"period": "a minute"}}, "/quota/period"),
        ({"quota": {"onStoreError": "maybe"}}, "/quota/onStoreError"),
        ({"plans": {"defaultPlan": "Gold"}}, "/plans/defaultPlan"),
        ({"plans": {"definitions": {"gold_plan": {}}}}, "gold_plan"),
        ({"plans": {"definitions": {"gold": {"features": ["allowlists"]}}}}, "/plans/definitions/gold/features/0"),
        ({"plans": {"definitions": {"gold": {"defaultLimit": {"requests": 0}}}}}, "/plans/definitions/gold/defaultLimit/requests"),
        ({"plans": {"definitions": {"gold": {"maxLimit": {"requests": 5}}}}}, "maxLimit"),
        ({"vault": {"masterKeys": {"1": "x"}}}, "masterKeys"),
        ({"server": {"corsOrigins": ["*"]}}, "/server/corsOrigins/0"),
        ({"server": {"corsOrigins": ["https://app.example.com/"]}}, "/server/corsOrigins/0"),
        ({"server": {"corsOrigins": "https://app.example.com"}}, "/server/corsOrigins"),
        ({"server": {"publicOrigins": ["https://id.example.com/login"]}}, "/server/publicOrigins/0"),
        ({"server": {"publicOrigins": "https://id.example.com"}}, "/server/publicOrigins"),
    ]
    for values, fragment in bad:
        merged = {**CREDS, **values}
        try:
            chart.validate_schema(merged)
        except helm.HelmValuesError as e:
            expect(fragment in str(e), f"{values}: error does not name {fragment}: {e}")
        else:
            raise AssertionError(f"schema accepted {values}")
        expect_failure(merged, helm.HelmValuesError, fragment)


@check("NOTES.txt renders and names the Deployments")
def _():
    notes = render(CREDS)[f"{CHART.name}/templates/NOTES.txt"]
    expect(f"{RELEASE}-twig-identity-sessions" in notes and "serve --services sessions" in notes, notes)
    expect("GET /metrics on port 9464" in notes and "metrics port 9464" in notes, notes)
    notes = render({**CREDS, "metrics": {"enabled": False}})[f"{CHART.name}/templates/NOTES.txt"]
    expect("127.0.0.1:9464" in notes and "metrics port" not in notes, notes)


# --- deploy/ (Docker cannot run here: check what can be read) ---------------


@check("deploy/Dockerfile: release build of twig-identity, slim non-root runtime, gRPC and metrics ports")
def _():
    text = (DEPLOY / "Dockerfile").read_text()
    for needed in (
        r"^FROM rust:1\.95-bookworm AS \w+$",
        r"cargo build --release --locked --bin twig-identity",
        r"^FROM debian:bookworm-slim$",
        r"install -y --no-install-recommends ca-certificates",
        r"^USER [1-9][0-9]*:[1-9][0-9]*$",
        r"^WORKDIR /var/lib/twig$",
        r'^VOLUME \["/var/lib/twig"\]$',
        r"^EXPOSE 50051$",
        r"^EXPOSE 9464$",
        r'^ENTRYPOINT \["twig-identity"\]$',
        r'^CMD \["serve"\]$',
    ):
        expect(re.search(needed, text, re.M), f"Dockerfile lacks {needed}")


@check("deploy/compose.yaml: twig-identity on PostgreSQL 16, Redis 7, an OTLP collector and a mail catcher, metrics on 127.0.0.1:9464")
def _():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svc = compose["services"]
    app = svc["twig-identity"]
    expect((DEPLOY / app["build"]["context"] / app["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile", "build")
    env = app["environment"]
    expect(env["TWIG__SERVER__LISTEN"] == "0.0.0.0:50051", "listen")
    expect(env["TWIG__SERVER__ADMIN_LISTEN"] == "0.0.0.0:9464", "admin listen")
    expect(sorted(app["ports"]) == ["127.0.0.1:50051:50051", "127.0.0.1:9464:9464"], f"ports {app['ports']}")
    expect(env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"], "DATABASE_URL")
    expect(env["TWIG__AUTH__INTERNAL_TOKEN"].startswith("${TWIG__AUTH__INTERNAL_TOKEN:?"), "token from the environment")
    expect(env["TWIG__SECRETS_VAULT__MASTER_KEYS__1"].startswith("${TWIG__SECRETS_VAULT__MASTER_KEYS__1:?"), "master key from the environment")
    expect(env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317", "OTLP endpoint")
    expect(svc["postgres"]["image"] == "postgres:16" and svc["redis"]["image"] == "redis:7", "images")
    expect(svc["otel-collector"]["image"].startswith("otel/opentelemetry-collector:"), "collector image")
    expect(env["TWIG__MAIL__SMTP__HOST"] == "maildev" and env["TWIG__MAIL__SMTP__PORT"] == "1025", "mail relay")
    expect(env["TWIG__MAIL__SMTP__TLS"] == "none" and env["TWIG__MAIL__SMTP__ALLOW_PLAINTEXT"] == "true", "mail TLS")
    expect(env["TWIG__MAIL__FROM"] and env["TWIG__MAIL__LINK_BASE"].startswith("http://localhost"), "mail from, links")
    expect(svc["maildev"]["image"].startswith("maildev/maildev:"), "mail catcher image")
    expect(svc["maildev"]["ports"] == ["127.0.0.1:1080:1080"], f"mail catcher ports {svc['maildev'].get('ports')}")
    mount = svc["otel-collector"]["volumes"][0].split(":")
    expect((DEPLOY / mount[0]).resolve() == DEPLOY / "otel-collector.yaml", f"collector config {mount}")
    expect(f"--config={mount[1]}" in svc["otel-collector"]["command"], "collector reads the mounted config")


@check("deploy/otel-collector.yaml: OTLP gRPC on 4317 into a debug traces pipeline")
def _():
    cfg = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    expect(cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317"), "grpc endpoint")
    traces = cfg["service"]["pipelines"]["traces"]
    expect(traces == {"receivers": ["otlp"], "exporters": ["debug"]}, f"traces pipeline {traces}")
    expect("debug" in cfg["exporters"], "debug exporter")


def main() -> int:
    passed = failed = 0
    for name, fn in CHECKS:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"FAIL {name}\n  {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
