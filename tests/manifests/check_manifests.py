"""Offline checks for the Kubernetes manifests and the compose cluster.

  check_manifests.py render KUSTOMIZE_DIR
      Print the kustomization's resources as one multi-document YAML stream
      (fallback when kubectl is not installed; no transformers are applied).
  check_manifests.py schema --k8s-version V [--k8s-version V ...] FILE...
      Validate every document against the Kubernetes JSON schemas (strict:
      unknown fields are errors, and so is a kind/apiVersion with no schema).
  check_manifests.py consistency RENDERED_YAML COMPOSE_FILE KUSTOMIZE_DIR
      Cross-check names, selectors, ports, peers and hardening between the
      rendered manifests and the compose file.
  check_manifests.py render-component RENDERED_YAML COMPONENT_DIR
      Print RENDERED_YAML with the kustomize Component's StatefulSet patches
      merged in (fallback when kubectl is not installed: containers, env,
      volumeMounts and volumes merged by name, as a strategic merge does).
  check_manifests.py tls RENDERED_WITH_COMPONENT COMPONENT_DIR
      Check the TLS component: every TLS file the node and the command line
      are given lies in a read-only Secret mount, the peer trio is complete,
      and the cert-manager example issues those Secrets with the names and
      usages the nodes need.

Exit status is non-zero when any check fails.
"""

import os
import sys

import kubernetes_validate
import yaml


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs:
        raise SystemExit(f"{path}: no YAML documents")
    return docs


def kn(doc):
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------- render

def cmd_render(kdir):
    kust = load_docs(os.path.join(kdir, "kustomization.yaml"))[0]
    resources = kust.get("resources") or []
    listed = set(resources)
    on_disk = {
        f for f in os.listdir(kdir)
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"
    }
    missing = sorted(on_disk - listed)
    if missing:
        raise SystemExit(f"not listed in kustomization resources: {', '.join(missing)}")
    out = []
    for res in resources:
        out.extend(load_docs(os.path.join(kdir, res)))
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
    return 0


# ---------------------------------------------------------------- schema

def cmd_schema(versions, files):
    passed = failed = 0
    for path in files:
        try:
            docs = load_docs(path)
        except (yaml.YAMLError, OSError) as e:
            print(f"FAIL {path}: {e}")
            failed += 1
            continue
        for doc in docs:
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path) or "<root>"
                    print(f"FAIL {path} {kn(doc)} (k8s {version}): {where}: {e.message}")
                    failed += 1
                except kubernetes_validate.SchemaNotFoundError:
                    print(f"FAIL {path} {kn(doc)} (k8s {version}): no schema for "
                          f"apiVersion {doc.get('apiVersion')!r} kind {doc.get('kind')!r}")
                    failed += 1
                except Exception as e:  # version not supported, bad schema, bad data
                    print(f"FAIL {path} {kn(doc)} (k8s {version}): {type(e).__name__}: {e}")
                    failed += 1
                else:
                    print(f"ok   {path} {kn(doc)} (k8s {version})")
                    passed += 1
    print(f"schema: {passed} passed, {failed} failed")
    return 1 if failed else 0


# ---------------------------------------------------------------- consistency

class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
        return cond


def subset(small, big):
    return bool(small) and all(big.get(k) == v for k, v in small.items())


def env_map(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}


def cmd_consistency(rendered, compose_file, kdir):
    c = Checker()
    docs = load_docs(rendered)
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for d in docs:
        c.check("namespace" not in d["metadata"], f"{kn(d)}: no hard-coded namespace")

    sts = by.get(("StatefulSet", "eventstore"))
    if not c.check(sts is not None, "StatefulSet/eventstore exists"):
        return finish(c)
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    ctr = next((x for x in pod["containers"] if x["name"] == "eventstore"), None)
    if not c.check(ctr is not None, "container 'eventstore' exists"):
        return finish(c)
    ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
    env = env_map(ctr)
    replicas = spec.get("replicas", 1)

    c.check(subset(spec["selector"]["matchLabels"], labels), "StatefulSet selector matches pod labels")
    c.check(labels.get("app.kubernetes.io/name") == "eventstore", "pods labelled app.kubernetes.io/name=eventstore")
    c.check(replicas == 3, "3 replicas")
    c.check(spec.get("podManagementPolicy") == "Parallel", "podManagementPolicy Parallel")
    c.check(ports == {"client": 8080, "peer": 9090, "metrics": 9100},
            "container ports client=8080 peer=9090 metrics=9100")
    c.check(env.get("EVENTSTORE_LISTEN") == f"0.0.0.0:{ports.get('client')}", "EVENTSTORE_LISTEN uses the client port")
    c.check(env.get("EVENTSTORE_PEER_LISTEN") == f"0.0.0.0:{ports.get('peer')}", "EVENTSTORE_PEER_LISTEN uses the peer port")
    c.check(env.get("EVENTSTORE_METRICS_LISTEN") == f"0.0.0.0:{ports.get('metrics')}",
            "EVENTSTORE_METRICS_LISTEN uses the metrics port")
    annotations = spec["template"]["metadata"].get("annotations", {})
    c.check(annotations.get("prometheus.io/port") == str(ports.get("metrics"))
            and annotations.get("prometheus.io/path") == "/metrics",
            "scrape annotations name the metrics port and /metrics")

    headless = by.get(("Service", spec.get("serviceName")))
    c.check(headless is not None, f"serviceName {spec.get('serviceName')} refers to a Service")
    if headless:
        hs = headless["spec"]
        c.check(hs.get("clusterIP") == "None", "peer Service is headless")
        c.check(hs.get("publishNotReadyAddresses") is True, "peer Service publishes not-ready addresses")
        c.check(subset(hs.get("selector", {}), labels), "peer Service selector matches pod labels")
        c.check({p["port"] for p in hs["ports"]} == {8080, 9090}, "peer Service exposes 8080 and 9090")

    expected_peers = ",".join(
        f"{i}=eventstore-{i}.{spec.get('serviceName')}:{ports.get('peer')}" for i in range(replicas))
    c.check(env.get("EVENTSTORE_PEERS") == expected_peers,
            f"EVENTSTORE_PEERS lists every ordinal via the headless Service ({expected_peers})")

    client = by.get(("Service", "eventstore"))
    if c.check(client is not None, "client Service 'eventstore' exists"):
        cs = client["spec"]
        c.check(cs.get("clusterIP") != "None", "client Service has a cluster IP")
        c.check(subset(cs.get("selector", {}), labels), "client Service selector matches pod labels")
        c.check([p["port"] for p in cs["ports"]] == [8080], "client Service exposes only 8080")

    data_mounts = [m for m in ctr.get("volumeMounts", []) if m["mountPath"] == env.get("EVENTSTORE_DATA_DIR")]
    claim_names = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
    c.check(len(data_mounts) == 1 and data_mounts[0]["name"] in claim_names,
            "EVENTSTORE_DATA_DIR is a volumeClaimTemplate mount")
    for t in spec.get("volumeClaimTemplates", []):
        c.check(t["spec"].get("accessModes") == ["ReadWriteOnce"]
                and t["spec"]["resources"]["requests"].get("storage") == "1Gi",
                f"claim {t['metadata']['name']}: ReadWriteOnce 1Gi")
    c.check(any(m["mountPath"] == "/tmp" for m in ctr.get("volumeMounts", [])), "/tmp is writable (emptyDir)")

    rp = ctr.get("readinessProbe", {})
    c.check(rp.get("httpGet", {}).get("path") == "/readyz" and rp["httpGet"].get("port") == "metrics",
            "readiness probe is /readyz on the metrics port")
    lp = ctr.get("livenessProbe", {})
    c.check(lp.get("httpGet", {}).get("path") == "/healthz" and lp["httpGet"].get("port") == "metrics",
            "liveness probe is /healthz on the metrics port")
    c.check("startupProbe" in ctr, "startup probe set")
    c.check(pod.get("terminationGracePeriodSeconds") == 30, "terminationGracePeriodSeconds 30")
    c.check(pod.get("enableServiceLinks") is False, "service links disabled (EVENTSTORE_* env collisions)")

    psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
    c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001 and psc.get("fsGroup") == 10001,
            "pod runs as non-root uid 10001 with fsGroup 10001")
    c.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp RuntimeDefault")
    c.check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
            and csc.get("capabilities", {}).get("drop") == ["ALL"], "container hardening")
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", t) for t in
             anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
             + anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    c.check(any(t.get("topologyKey") == "kubernetes.io/hostname"
                and subset(t.get("labelSelector", {}).get("matchLabels", {}), labels) for t in terms),
            "pod anti-affinity across kubernetes.io/hostname")
    res = ctr.get("resources", {})
    c.check(bool(res.get("requests")) and bool(res.get("limits")), "resource requests and limits set")

    pdb = by.get(("PodDisruptionBudget", "eventstore"))
    if c.check(pdb is not None, "PodDisruptionBudget exists"):
        c.check(pdb["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable 1")
        c.check(subset(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selector matches pod labels")

    np_ = by.get(("NetworkPolicy", "eventstore"))
    if c.check(np_ is not None, "NetworkPolicy exists"):
        ns = np_["spec"]
        c.check(subset(ns["podSelector"]["matchLabels"], labels), "NetworkPolicy selects the pods")
        rules = ns.get("ingress", [])
        open_rules = [r for r in rules if not r.get("from")]
        open_ports = {p.get("port") for r in open_rules for p in r.get("ports", [])}
        c.check(open_ports == {8080, 9100} and all(r.get("ports") for r in open_rules),
                "NetworkPolicy: only 8080 and 9100 open to everyone")
        peer_rules = [r for r in rules if 9090 in {p.get("port") for p in r.get("ports", [])}]
        c.check(bool(peer_rules) and all(
            r.get("from") and all(f.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "eventstore"}
                                  and set(f) == {"podSelector"} for f in r["from"]) for r in peer_rules),
                "NetworkPolicy: 9090 only from app.kubernetes.io/name=eventstore pods")

    # Examples reference the client Service and the same image.
    exdir = os.path.join(kdir, "examples")
    for f in sorted(os.listdir(exdir)) if os.path.isdir(exdir) else []:
        for d in load_docs(os.path.join(exdir, f)):
            for x in d.get("spec", {}).get("containers", []):
                args = " ".join(x.get("args", []))
                ex_env = {e.get("name"): e.get("value") for e in x.get("env", [])}
                c.check(x.get("image") == ctr["image"], f"examples/{f}: same image as the StatefulSet")
                c.check("dns:///eventstore.$(POD_NAMESPACE):8080" in args
                        or ex_env.get("EVENTSTORE_SERVER") == "dns:///eventstore.$(POD_NAMESPACE):8080",
                        f"examples/{f}: uses the client Service")

    # Compose mirrors the StatefulSet; only the peer host names differ.
    compose = load_docs(compose_file)[0]
    services = compose.get("services", {})
    c.check(sorted(services) == [f"eventstore-{i}" for i in range(replicas)],
            "compose has one service per StatefulSet ordinal")
    compose_peers = ",".join(f"{i}=eventstore-{i}:{ports.get('peer')}" for i in range(replicas))
    for name, svc in sorted(services.items()):
        i = int(name.rsplit("-", 1)[1])
        cenv = svc.get("environment", {})
        if isinstance(cenv, list):
            cenv = dict(e.split("=", 1) for e in cenv)
        cenv = {k: str(v) for k, v in cenv.items()}
        c.check(svc.get("hostname") == name, f"compose {name}: hostname gives node id {i}")
        c.check(cenv.get("EVENTSTORE_PEERS") == compose_peers, f"compose {name}: peers {compose_peers}")
        same = {k: v for k, v in env.items() if k != "EVENTSTORE_PEERS"}
        other = {k: v for k, v in cenv.items() if k != "EVENTSTORE_PEERS"}
        c.check(same == other, f"compose {name}: same environment as the StatefulSet")
        c.check(svc.get("command") == ctr.get("args"), f"compose {name}: same arguments as the StatefulSet")
        c.check(svc.get("stop_grace_period") == f"{pod.get('terminationGracePeriodSeconds')}s",
                f"compose {name}: stop_grace_period matches terminationGracePeriodSeconds")
        c.check(svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"]
                and str(svc.get("user")) == "10001:10001", f"compose {name}: same hardening")
        c.check(f"{name}-data:{env.get('EVENTSTORE_DATA_DIR')}" in svc.get("volumes", []),
                f"compose {name}: named volume at the data dir")
        pub = svc.get("ports", [])
        c.check(sorted(pub) == sorted([f"127.0.0.1:{18080 + i}:8080", f"127.0.0.1:{19090 + i}:9090",
                                       f"127.0.0.1:{19100 + i}:9100"]),
                f"compose {name}: ports published on 127.0.0.1 only")
    return finish(c)


# ---------------------------------------------------------------- TLS component

def merge_named(base, patch, key):
    """Merges list items by `key`, as a strategic merge patch does."""
    out = [dict(x) for x in base]
    for item in patch:
        for i, x in enumerate(out):
            if x.get(key) == item.get(key):
                out[i] = {**x, **item}
                break
        else:
            out.append(item)
    return out


def cmd_render_component(rendered, cdir):
    docs = load_docs(rendered)
    comp = load_docs(os.path.join(cdir, "kustomization.yaml"))[0]
    if comp.get("kind") != "Component" or comp.get("apiVersion") != "kustomize.config.k8s.io/v1alpha1":
        raise SystemExit(f"{cdir}: not a kustomize Component")
    for p in comp.get("patches", []):
        target = p.get("target", {})
        patch = load_docs(os.path.join(cdir, p["path"]))[0]
        for d in docs:
            if d["kind"] != target.get("kind") or d["metadata"]["name"] != target.get("name"):
                continue
            pod = d["spec"]["template"]["spec"]
            ppod = patch["spec"]["template"]["spec"]
            for pc in ppod.get("containers", []):
                for c in pod["containers"]:
                    if c["name"] == pc["name"]:
                        c["env"] = merge_named(pc.get("env", []), c.get("env", []), "name")
                        c["volumeMounts"] = merge_named(c.get("volumeMounts", []),
                                                        pc.get("volumeMounts", []), "mountPath")
            pod["volumes"] = merge_named(pod.get("volumes", []), ppod.get("volumes", []), "name")
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


def host_matches(pattern, host):
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def cmd_tls(rendered, cdir):
    c = Checker()
    docs = load_docs(rendered)
    sts = next((d for d in docs if d["kind"] == "StatefulSet"), None)
    if not c.check(sts is not None, "StatefulSet rendered with the component"):
        return finish(c)
    pod = sts["spec"]["template"]["spec"]
    ctr = next(x for x in pod["containers"] if x["name"] == "eventstore")
    env = env_map(ctr)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = ctr.get("volumeMounts", [])

    def secret_of(path):
        """(secret name, key) of the Secret mount that holds `path`."""
        for m in mounts:
            prefix = m["mountPath"].rstrip("/") + "/"
            if path.startswith(prefix) and m.get("readOnly") is True:
                vol = volumes.get(m["name"], {})
                if "secret" in vol:
                    return vol["secret"].get("secretName"), path[len(prefix):]
        return None, None

    files = ["EVENTSTORE_TLS_CERT", "EVENTSTORE_TLS_KEY", "EVENTSTORE_PEER_TLS_CERT",
             "EVENTSTORE_PEER_TLS_KEY", "EVENTSTORE_PEER_TLS_CA", "EVENTSTORE_CA",
             "EVENTSTORE_CERT", "EVENTSTORE_CERT_KEY"]
    optional = ["EVENTSTORE_TLS_CLIENT_CA"]
    secrets = {}
    for name in files + optional:
        if name not in env:
            if name not in optional:
                c.check(False, f"{name} is set")
            continue
        secret, key = secret_of(env[name])
        c.check(secret is not None and key in ("tls.crt", "tls.key", "ca.crt"),
                f"{name}={env[name]} is tls.crt, tls.key or ca.crt of a read-only Secret mount")
        if secret:
            secrets.setdefault(secret, set()).add(name)
    peer = {secret_of(env.get(n, ""))[0] for n in
            ("EVENTSTORE_PEER_TLS_CERT", "EVENTSTORE_PEER_TLS_KEY", "EVENTSTORE_PEER_TLS_CA")}
    c.check(len(peer) == 1 and None not in peer, "the peer certificate, key and CA come from one Secret")
    cli = {secret_of(env.get(n, ""))[0] for n in ("EVENTSTORE_CA", "EVENTSTORE_CERT", "EVENTSTORE_CERT_KEY")}
    c.check(cli == peer, "the command line in the pod uses the peer certificate (for `cluster`)")
    for v in volumes.values():
        if "secret" in v:
            mode = v["secret"].get("defaultMode")
            c.check(mode is not None and mode & 0o007 == 0, f"volume {v['name']}: keys not readable by others")

    examples = os.path.join(cdir, "examples", "cert-manager.yaml")
    certs = {d["spec"]["secretName"]: d for d in load_docs(examples)
             if d.get("apiVersion") == "cert-manager.io/v1" and d.get("kind") == "Certificate"}
    issuers = {d["metadata"]["name"] for d in load_docs(examples)
               if d.get("apiVersion") == "cert-manager.io/v1" and d.get("kind") == "Issuer"}
    for d in certs.values():
        ref = d["spec"].get("issuerRef", {})
        c.check(ref.get("kind") == "Issuer" and ref.get("name") in issuers,
                f"Certificate {d['metadata']['name']}: issued by an Issuer of the example")
    for secret in secrets:
        c.check(secret in certs, f"Secret {secret} is made by a Certificate of the example")
    peer_secret = next(iter(peer)) if len(peer) == 1 else None
    pc = certs.get(peer_secret, {}).get("spec", {})
    usages = set(pc.get("usages", []))
    c.check({"server auth", "client auth"} <= usages,
            "the peer Certificate allows server auth and client auth (it is presented both ways)")
    hosts = [p.split("=", 1)[1].rsplit(":", 1)[0] for p in env.get("EVENTSTORE_PEERS", "").split(",") if "=" in p]
    names = pc.get("dnsNames", [])
    c.check(bool(hosts) and all(any(host_matches(n, h) for n in names) for h in hosts),
            f"the peer Certificate names every host in EVENTSTORE_PEERS ({', '.join(hosts)})")
    c.check("127.0.0.1" in pc.get("ipAddresses", []), "the peer Certificate names 127.0.0.1 (the CLI in a pod)")
    client_secret = secret_of(env.get("EVENTSTORE_TLS_CERT", ""))[0]
    cc = certs.get(client_secret, {}).get("spec", {})
    c.check("eventstore" in cc.get("dnsNames", []) and "server auth" in cc.get("usages", []),
            "the client-port Certificate names the client Service and allows server auth")
    return finish(c)


def finish(c):
    print(f"consistency: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "render" and len(argv) == 3:
        return cmd_render(argv[2])
    if len(argv) >= 2 and argv[1] == "schema":
        versions, files, it = [], [], iter(argv[2:])
        for a in it:
            if a == "--k8s-version":
                versions.append(next(it))
            else:
                files.append(a)
        if not versions or not files:
            raise SystemExit("usage: schema --k8s-version V [...] FILE...")
        return cmd_schema(versions, files)
    if len(argv) == 4 and argv[1] == "render-component":
        return cmd_render_component(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "tls":
        return cmd_tls(argv[2], argv[3])
    if len(argv) == 5 and argv[1] == "consistency":
        return cmd_consistency(argv[2], argv[3], argv[4])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
