#!/usr/bin/env python3
"""Checks the deployment kit against the code (`just lint-deploy`; README: Containers and
Kubernetes). The functions' binaries, durable consumers, streams and HTTP ports are read from
their declarations in shared/src/functions/, and every place that names them must agree:

* deploy/k8s (rendered by `kubectl kustomize`): Kubernetes objects valid against the API schema
  (kubernetes-validate, strict); per function a Deployment running the one image with the
  function's binary as command, probes /health and /ready on its port, non-root with a
  read-only root filesystem; and a KEDA ScaledObject on it whose nats-jetstream trigger names
  the function's stream and durable consumer, with only fields KEDA knows.
* compose.yaml (rendered by `docker-compose config`): per function a service built from the
  root Dockerfile running its binary, healthy on /ready, after healthy NATS and Postgres; NATS
  at the current release (NATS_SERVER_CURRENT's version) with JetStream and monitoring.
* Dockerfile: EXPOSEs every function's port.

Usage: check.py KUBECTL DOCKER_COMPOSE. Prints each failure; exits 1 if there is any.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ["realtime", "historical", "dlq-retry", "onboarding"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def function_specs():
    """{name: {bin, durable, stream, http_port}} from the FunctionSpec constants."""
    src = ROOT / "shared/src"
    streams = dict(re.findall(r'pub const (\w+_STREAM): &str = "(\w+)";', (src / "transport/streams.rs").read_text()))
    specs = {}
    for path in (src / "functions").glob("*.rs"):
        for block in re.findall(r"pub const \w+: FunctionSpec = FunctionSpec \{(.*?)\n\};", path.read_text(), re.S):
            field = lambda key: re.search(key + r': "?([\w-]+)"?,', block).group(1)  # noqa: E731
            stream = field("stream")
            specs[field("name")] = {
                "bin": field("bin"),
                "durable": field("durable"),
                "stream": streams.get(stream, stream),
                "port": int(field("http_port")),
            }
    return specs


SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
                      "triggers"}
SCALE_TARGET_REF = {"name", "kind", "apiVersion", "envSourceContainerName"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
NATS_JETSTREAM_METADATA = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold",
                           "activationLagThreshold", "useHttps"}


def check_k8s(kubectl, specs):
    rendered = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/k8s")], check=True,
                              capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        if doc["apiVersion"] != "keda.sh/v1alpha1":
            try:
                kubernetes_validate.validate(doc, "1.30", strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"k8s {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
    deployments = by_kind.get("Deployment", {})
    scaled = by_kind.get("ScaledObject", {})
    for name in FUNCTIONS:
        spec, app = specs[name], specs[name]["bin"]
        where = f"k8s {app}"
        dep = deployments.get(app)
        if not check(dep is not None, f"{where}: no Deployment"):
            continue
        pod = dep["spec"]["template"]["spec"]
        (ctr,) = pod["containers"]
        check(ctr["command"] == [app], f"{where}: command {ctr['command']}, not [{app}]")
        images = {c["image"] for d in deployments.values() for c in d["spec"]["template"]["spec"]["containers"]}
        check(len(images) == 1, f"k8s: the functions run several images {sorted(images)}")
        ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
        check(ports.get("http") == spec["port"], f"{where}: http port {ports.get('http')}, not {spec['port']}")
        for probe, path in [("livenessProbe", "/health"), ("readinessProbe", "/ready")]:
            get = ctr.get(probe, {}).get("httpGet", {})
            check(get.get("path") == path and get.get("port") in ("http", spec["port"]),
                  f"{where}: {probe} is not GET {path} on the http port")
        sec = {**pod.get("securityContext", {}), **ctr.get("securityContext", {})}
        check(sec.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true")
        check(sec.get("readOnlyRootFilesystem") is True, f"{where}: the root filesystem is not read-only")
        check(sec.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation is allowed")
        check("replicas" not in dep["spec"], f"{where}: replicas are set (KEDA owns them)")

        so = scaled.get(app)
        if not check(so is not None, f"{where}: no ScaledObject"):
            continue
        s = so["spec"]
        check(set(s) <= SCALED_OBJECT_SPEC, f"{where}: ScaledObject fields KEDA does not know: "
              f"{sorted(set(s) - SCALED_OBJECT_SPEC)}")
        check(set(s["scaleTargetRef"]) <= SCALE_TARGET_REF, f"{where}: unknown scaleTargetRef fields "
              f"{sorted(set(s['scaleTargetRef']) - SCALE_TARGET_REF)}")
        check(s["scaleTargetRef"]["name"] == app, f"{where}: the ScaledObject scales {s['scaleTargetRef']['name']}")
        for key in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            check(isinstance(s.get(key), int), f"{where}: {key} is not an integer")
        want_min = 1 if name == "dlq-retry" else 0
        check(s.get("minReplicaCount") == want_min, f"{where}: minReplicaCount {s.get('minReplicaCount')}, "
              f"not {want_min}")
        (trigger,) = s["triggers"]
        meta = trigger.get("metadata", {})
        check(set(trigger) <= TRIGGER, f"{where}: unknown trigger fields {sorted(set(trigger) - TRIGGER)}")
        check(trigger["type"] == "nats-jetstream", f"{where}: trigger type {trigger['type']}")
        check(set(meta) <= NATS_JETSTREAM_METADATA, f"{where}: unknown nats-jetstream metadata "
              f"{sorted(set(meta) - NATS_JETSTREAM_METADATA)}")
        check(all(isinstance(v, str) for v in meta.values()), f"{where}: trigger metadata values must be strings")
        check(meta.get("stream") == spec["stream"], f"{where}: trigger stream {meta.get('stream')}, "
              f"not {spec['stream']}")
        check(meta.get("consumer") == spec["durable"], f"{where}: trigger consumer {meta.get('consumer')}, "
              f"not {spec['durable']}")
        check(str(meta.get("natsServerMonitoringEndpoint", "")).endswith(":8222"),
              f"{where}: the monitoring endpoint is not NATS's port 8222")
        check(str(meta.get("lagThreshold", "")).isdigit(), f"{where}: lagThreshold is not a number")


def check_compose(docker_compose, specs):
    config = json.loads(subprocess.run([docker_compose, "-f", str(ROOT / "compose.yaml"), "config", "--format",
                                        "json"], check=True, capture_output=True, text=True).stdout)
    services = config["services"]
    nats = services.get("nats", {})
    server = os.environ.get("NATS_SERVER_CURRENT", "")
    if server and Path(server).exists():
        out = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
        version = re.search(r"v(\d+\.\d+)", out).group(1)
        check(nats.get("image", "").startswith(f"nats:{version}"),
              f"compose nats: image {nats.get('image')}, not the current release {version}")
    command = nats.get("command") or []
    check("-js" in command and "-m" in command, "compose nats: JetStream or monitoring is off")
    check(bool(services.get("postgres", {}).get("healthcheck")), "compose postgres: no healthcheck")
    check(bool(nats.get("healthcheck")), "compose nats: no healthcheck")
    images = set()
    for name in FUNCTIONS:
        spec, svc = specs[name], services.get(name)
        where = f"compose {name}"
        if not check(svc is not None, f"{where}: no service"):
            continue
        images.add(svc.get("image"))
        check(svc.get("command") == [spec["bin"]], f"{where}: command {svc.get('command')}")
        build = svc.get("build", {})
        check(Path(build.get("context", "")) == ROOT and build.get("dockerfile") == "Dockerfile",
              f"{where}: not built from the root Dockerfile")
        test = svc.get("healthcheck", {}).get("test", [])
        check(test[:2] == ["CMD", "wa-healthcheck"] and "/ready" in test, f"{where}: healthcheck {test}")
        deps = svc.get("depends_on", {})
        for dep in ("nats", "postgres"):
            check(deps.get(dep, {}).get("condition") == "service_healthy",
                  f"{where}: does not wait for a healthy {dep}")
        env = svc.get("environment", {})
        check("@postgres:" in env.get("DATABASE_URL", "") and "//nats:" in env.get("NATS_URL", ""),
              f"{where}: DATABASE_URL/NATS_URL do not point at the compose services")
    check(len(images) == 1, f"compose: the functions run several images {sorted(images)}")


def check_dockerfile(specs):
    text = (ROOT / "Dockerfile").read_text()
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.*)$", text, re.M) for p in line.split()}
    for spec in specs.values():
        check(spec["port"] in exposed, f"Dockerfile: port {spec['port']} of {spec['bin']} is not exposed")
        check(f" {spec['bin']}" in text, f"Dockerfile: {spec['bin']} is not built into the image")


def main():
    kubectl, docker_compose = sys.argv[1:3]
    specs = function_specs()
    if not check(set(FUNCTIONS) <= set(specs), f"the function declarations were not found (got {sorted(specs)})"):
        return report()
    check_k8s(kubectl, specs)
    check_compose(docker_compose, specs)
    check_dockerfile(specs)
    return report()


def report():
    for f in failures:
        print(f"deploy check: {f}", file=sys.stderr)
    print(f"deploy check: {'FAILED' if failures else 'ok'} ({len(failures)} problems)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
