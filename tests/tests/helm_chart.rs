//! The Helm chart, checked without a cluster: `helm lint` and `helm template` for the default
//! and a production-like values file, every manifest validated by kubeconform against the
//! Kubernetes 1.33 schemas, the values schema refusing bad values, and the rendered manifests
//! holding what docs/operations.md promises. helm, kubeconform and the schemas come from
//! deploy/local/k8s-tools (run by deploy/local/test); a missing tool fails the test.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use lienthong_tests::repo_root;
use serde::Deserialize as _;
use serde_yaml::Value;

const KUBE_VERSION: &str = "1.33.0";

fn tool(name: &str, env: &str) -> PathBuf {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".state/bin").join(name));
    assert!(
        path.is_file(),
        "{} not found: run deploy/local/k8s-tools (deploy/local/test does) or set {env}",
        path.display()
    );
    path
}

fn chart() -> PathBuf {
    repo_root().join("helm/lienthong")
}

/// Runs helm; Ok(stdout) on success, Err(stderr) on failure.
fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("helm", "LIENTHONG_HELM"))
        .args(args)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn render(extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "lt",
        chart.to_str().expect("utf-8 path"),
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    helm(&args).unwrap_or_else(|e| panic!("helm template {extra:?} failed: {e}"))
}

fn production() -> String {
    chart()
        .join("ci/production-values.yaml")
        .to_string_lossy()
        .into_owned()
}

/// The values file that sets every scheduling and identity knob.
fn scheduling() -> String {
    chart()
        .join("ci/scheduling-values.yaml")
        .to_string_lossy()
        .into_owned()
}

fn manifests(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|m| m["kind"] == kind).collect()
}

fn name(m: &Value) -> &str {
    m["metadata"]["name"].as_str().unwrap_or_default()
}

/// The pod spec of a workload (or of a bare Pod, as `helm test` hooks are).
fn pod_spec(m: &Value) -> &Value {
    if m["kind"] == "Pod" {
        &m["spec"]
    } else {
        &m["spec"]["template"]["spec"]
    }
}

fn containers(m: &Value) -> Vec<&Value> {
    let spec = pod_spec(m);
    let mut all: Vec<&Value> = Vec::new();
    for key in ["initContainers", "containers"] {
        if let Some(list) = spec[key].as_sequence() {
            all.extend(list.iter());
        }
    }
    all
}

#[test]
fn the_chart_lints_and_every_manifest_is_valid_kubernetes() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    let (production, scheduling) = (production(), scheduling());
    for values in [
        vec![],
        vec!["-f", production.as_str()],
        vec!["-f", production.as_str(), "-f", scheduling.as_str()],
        vec![
            "-f",
            production.as_str(),
            "--set",
            "warehouseLoader.keda.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", chart, "--strict"];
        args.extend(values.iter().copied());
        helm(&args).unwrap_or_else(|e| panic!("helm lint {values:?}: {e}"));

        let rendered = render(&values);
        // kubeconform reads only files named .yaml or .json.
        let file = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("temp file");
        std::fs::write(file.path(), &rendered).expect("write");
        let schemas = repo_root().join(".state/k8s-schemas");
        assert!(
            schemas.is_dir(),
            "no Kubernetes schemas in {}: run deploy/local/k8s-tools",
            schemas.display()
        );
        let out = Command::new(tool("kubeconform", "LIENTHONG_KUBECONFORM"))
            .args(["-strict", "-summary", "-kubernetes-version", KUBE_VERSION])
            .arg("-schema-location")
            .arg(format!(
                "{}/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
                schemas.display()
            ))
            // The Prometheus Operator's CRDs have no schema among Kubernetes' own.
            .args(["-skip", "ServiceMonitor,PrometheusRule,ScaledObject,TriggerAuthentication"])
            .arg(file.path())
            .output()
            .expect("kubeconform runs");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "kubeconform {values:?}:\n{report}");
        let all = manifests(&rendered);
        let checked = all
            .iter()
            .filter(|m| {
                ![
                    "ServiceMonitor",
                    "PrometheusRule",
                    "ScaledObject",
                    "TriggerAuthentication",
                ]
                .contains(&m["kind"].as_str().unwrap_or_default())
            })
            .count();
        assert!(
            report.contains(&format!("Valid: {checked}, Invalid: 0, Errors: 0")),
            "every manifest validated: {report}"
        );
    }
}

#[test]
fn the_region_codes_the_schema_accepts_are_the_34_current_provinces() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    let accepted: Vec<&str> = schema["properties"]["regionalStore"]["properties"]["regions"]
        ["items"]["properties"]["code"]["enum"]
        .as_array()
        .expect("an enum of region codes")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let current: Vec<&str> = lienthong_core::province::Province::all_current()
        .iter()
        .map(|p| p.code)
        .collect();
    assert_eq!(accepted, current);
    assert_eq!(accepted.len(), 34);
}

/// `--set-string` for region codes (strings, as "01" must be), `--set` for the rest.
fn set_flag(set: &str) -> &'static str {
    if set.contains(".code=") {
        "--set-string"
    } else {
        "--set"
    }
}

#[test]
fn the_values_schema_refuses_bad_values_with_the_path_of_the_value() {
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    for (set, path) in [
        ("warehouseLoader.replicas=two", "/warehouseLoader/replicas"),
        ("warehouseLoader.replicas=40", "/warehouseLoader/replicas"),
        ("deidentifier.replicas=40", "/deidentifier/replicas"),
        (
            "deidentifier.analyticsKeySecret=",
            "/deidentifier/analyticsKeySecret",
        ),
        ("kafka.securityProtocol=tls", "/kafka/securityProtocol"),
        (
            "regionalStore.regions[0].code=HCM",
            "/regionalStore/regions/0/code",
        ),
        (
            // Bình Dương (74) was a province until 1 July 2025; it is part of 79 since.
            "regionalStore.regions[0].code=74",
            "/regionalStore/regions/0/code",
        ),
        ("gateway.replicaz=3", "/gateway"),
        (
            "gateway.service.externalTrafficPolicy=Nearest",
            "/gateway/service/externalTrafficPolicy",
        ),
        ("pod.nodeSelectr.zone=a", "/pod"),
        (
            "gateway.pod.extraEnv[0].name=1-BAD",
            "/gateway/pod/extraEnv/0/name",
        ),
        (
            "warehouseLoader.pgDsn=postgres://u:secret@db/w",
            "/warehouseLoader/pgDsn",
        ),
    ] {
        let err = helm(&["template", "lt", chart, set_flag(set), set])
            .expect_err(&format!("{set} must be refused"));
        assert!(
            err.contains("values don't meet the specifications") && err.contains(path),
            "{set}: {err}"
        );
    }
    // Values the templates themselves refuse, with the message that says what to set.
    for (set, why, says) in [
        (
            "gateway.tokenKeysConfigMap=",
            "a gateway nobody can authenticate to",
            "gateway: set clientCaSecret",
        ),
        (
            "deidentifier.analyticsKeySecret=lienthong-pseudonym-key",
            "analytics identities joinable to the document topics' keys",
            "must not be pseudonymKey.secret",
        ),
        (
            "warehouseLoader.keda.enabled=true,warehouseLoader.keda.minReplicas=20",
            "a KEDA minimum above its maximum",
            "keda.minReplicas (20) is above maxReplicas (12)",
        ),
        (
            "gateway.autoscaling.minReplicas=20",
            "an autoscaler minimum above its maximum",
            "minReplicas (20) is above maxReplicas (10)",
        ),
        (
            "regionalStore.regions[0].code=79,regionalStore.regions[1].code=79",
            "one region twice",
            "lists region 79 twice",
        ),
        (
            "kafka.sasl.secret=",
            "SASL without its secret",
            "kafka.sasl.secret is required",
        ),
        (
            "regionalStore.clientCrlConfigMap=facility-crl",
            "a revocation list without the CA it belongs to",
            "set clientCaSecret too",
        ),
    ] {
        let err = helm(&[
            "template",
            "lt",
            chart,
            "--kube-version",
            KUBE_VERSION,
            set_flag(set),
            set,
        ])
        .expect_err(&format!("{why} must be refused"));
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn pod_settings_reach_every_workload_and_a_workload_block_wins() {
    let all = manifests(&render(&["-f", &production(), "-f", &scheduling()]));
    let workloads: Vec<&Value> = all.iter().filter(|m| !containers(m).is_empty()).collect();
    // Gateway, three regions, de-identification, warehouse loader, setup Job, helm test Pod.
    assert_eq!(
        workloads.len(),
        8,
        "{:?}",
        workloads.iter().map(|m| name(m)).collect::<Vec<_>>()
    );
    for m in &workloads {
        let pod = pod_spec(m);
        let meta = if m["kind"] == "Pod" {
            &m["metadata"]
        } else {
            &m["spec"]["template"]["metadata"]
        };
        let gateway = name(m).ends_with("-gateway");
        assert_eq!(
            pod["nodeSelector"]["kubernetes.io/os"],
            "linux",
            "{}",
            name(m)
        );
        assert_eq!(pod["tolerations"][0]["key"], "dedicated", "{}", name(m));
        assert_eq!(pod["serviceAccountName"], "lt-lienthong", "{}", name(m));
        assert_eq!(pod["automountServiceAccountToken"], false, "{}", name(m));
        assert_eq!(
            pod["priorityClassName"],
            if gateway {
                "lienthong-critical"
            } else {
                "lienthong-high"
            },
            "{}",
            name(m)
        );
        assert_eq!(
            pod["topologySpreadConstraints"].is_sequence(),
            gateway,
            "{}",
            name(m)
        );
        if m["kind"] != "Pod" {
            assert_eq!(meta["labels"]["team"], "moh-platform", "{}", name(m));
            assert_eq!(
                meta["annotations"]["example.org/owner"],
                "lienthong",
                "{}",
                name(m)
            );
        }
        // The services get the extra environment; the setup steps keep theirs.
        let service = !matches!(m["kind"].as_str(), Some("Job" | "Pod"));
        for c in containers(m) {
            let env = serde_yaml::to_string(&c["env"]).unwrap();
            assert_eq!(env.contains("Asia/Ho_Chi_Minh"), service, "{}", name(m));
        }
    }
    let accounts = of_kind(&all, "ServiceAccount");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["automountServiceAccountToken"], false);
    // Without the file, none of it.
    let plain = render(&["-f", &production()]);
    for absent in [
        "nodeSelector",
        "tolerations",
        "priorityClassName",
        "serviceAccountName",
    ] {
        assert!(
            !plain.contains(absent),
            "{absent} rendered without being asked for"
        );
    }
}

#[test]
fn rendered_manifests_hold_what_the_operator_docs_promise() {
    let defaults = manifests(&render(&[]));
    let prod = manifests(&render(&["-f", &production()]));

    // warehouseLoader.replicas is the scaling knob.
    let scaled = manifests(&render(&["--set", "warehouseLoader.replicas=5"]));
    let loader = of_kind(&scaled, "Deployment")
        .into_iter()
        .find(|d| name(d).ends_with("warehouse-loader"))
        .expect("warehouse loader Deployment");
    assert_eq!(loader["spec"]["replicas"].as_u64(), Some(5));
    let loader = of_kind(&prod, "Deployment")
        .into_iter()
        .find(|d| name(d).ends_with("warehouse-loader"))
        .expect("warehouse loader Deployment");
    assert_eq!(loader["spec"]["replicas"].as_u64(), Some(6));

    // Or KEDA scales it on the group's lag read from the brokers, as the loader's own user.
    let keda = manifests(&render(&[
        "-f",
        &production(),
        "--set",
        "warehouseLoader.keda.enabled=true",
    ]));
    let scaled = of_kind(&keda, "ScaledObject");
    assert_eq!(scaled.len(), 1);
    let trigger = &scaled[0]["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "kafka");
    assert_eq!(trigger["metadata"]["consumerGroup"], "lienthong-warehouse");
    assert_eq!(trigger["metadata"]["sasl"], "scram_sha512");
    assert_eq!(trigger["metadata"]["tls"], "enable");
    let auth = serde_yaml::to_string(&of_kind(&keda, "TriggerAuthentication")[0]["spec"]).unwrap();
    assert!(
        auth.contains("lienthong-kafka-warehouse") && auth.contains("kafka-cluster-ca"),
        "{auth}"
    );
    let loader = of_kind(&keda, "Deployment")
        .into_iter()
        .find(|d| name(d).ends_with("warehouse-loader"))
        .expect("warehouse loader Deployment");
    assert!(
        loader["spec"]["replicas"].is_null(),
        "KEDA owns the replica count"
    );

    // Each region its own StatefulSet, volume claim and Service.
    let sets: Vec<_> = of_kind(&prod, "StatefulSet")
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "regional-store")
        .collect();
    let mut regions: Vec<&str> = sets
        .iter()
        .map(|s| {
            s["metadata"]["labels"]["lienthong.vn/region"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    regions.sort_unstable();
    assert_eq!(regions, ["01", "48", "79"]);
    for s in &sets {
        let region = s["metadata"]["labels"]["lienthong.vn/region"]
            .as_str()
            .unwrap_or("");
        let claims = s["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .expect("a volume per region");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["spec"]["storageClassName"], "fast-ssd");
        let args = serde_yaml::to_string(&containers(s)[0]["args"]).unwrap();
        assert!(args.contains(&format!("--regions={region}")), "{args}");
        assert!(
            of_kind(&prod, "Service")
                .iter()
                .any(|svc| name(svc) == name(s)),
            "a Service for region {region}"
        );
    }
    let hcm = sets
        .iter()
        .find(|s| name(s).ends_with("-79"))
        .expect("region 79");
    assert_eq!(hcm["spec"]["replicas"].as_u64(), Some(2));
    // Replicas of a region are full copies: stable names from a headless Service (metrics
    // included), queries through a Service of ready replicas only, a disruption budget, and
    // readiness that means open and caught up, apart from liveness.
    for s in &sets {
        let headless = format!("{}-headless", name(s));
        assert_eq!(s["spec"]["serviceName"], headless.as_str());
        let svc = of_kind(&prod, "Service")
            .into_iter()
            .find(|svc| name(svc) == headless)
            .expect("a headless Service per region");
        assert_eq!(svc["spec"]["clusterIP"], "None");
        let ports = serde_yaml::to_string(&svc["spec"]["ports"]).unwrap();
        assert!(
            ports.contains("metrics") && ports.contains("grpc"),
            "{ports}"
        );
        let queries = of_kind(&prod, "Service")
            .into_iter()
            .find(|svc| name(svc) == name(s))
            .expect("a query Service per region");
        let ports = serde_yaml::to_string(&queries["spec"]["ports"]).unwrap();
        assert!(!ports.contains("metrics"), "queries only: {ports}");
        let pdb = of_kind(&prod, "PodDisruptionBudget")
            .into_iter()
            .find(|p| name(p) == name(s))
            .expect("a PodDisruptionBudget per region");
        assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["lienthong.vn/region"],
            s["metadata"]["labels"]["lienthong.vn/region"]
        );
        let c = &containers(s)[0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
        let text = serde_yaml::to_string(c).unwrap();
        for expected in [
            "LIENTHONG_REGIONAL_REPLICA",
            "apps.kubernetes.io/pod-index",
            "--ready-max-lag=",
            "--cutoff-secs=",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }

    // The de-identification service: a StatefulSet whose transactional ids are its pod names
    // (stable across restarts), with the analytics key and no pseudonym key.
    let deid = of_kind(&prod, "StatefulSet")
        .into_iter()
        .find(|s| name(s).ends_with("deidentifier"))
        .expect("de-identification StatefulSet");
    assert_eq!(deid["spec"]["replicas"].as_u64(), Some(3));
    let deid_text = serde_yaml::to_string(deid).unwrap();
    for expected in [
        "LIENTHONG_DEIDENTIFIER_TRANSACTIONAL_ID",
        "lienthong-deidentifier-$(POD_NAME)",
        "--analytics-key-file=/etc/lienthong/analytics-key/analytics.key",
        "secretName: lienthong-analytics-key",
    ] {
        assert!(
            deid_text.contains(expected),
            "{expected} missing: {deid_text}"
        );
    }
    assert!(!deid_text.contains("pseudonym"), "{deid_text}");
    assert!(
        of_kind(&prod, "Service")
            .iter()
            .any(|svc| name(svc) == name(deid) && svc["spec"]["clusterIP"] == "None"),
        "a headless Service names the de-identification pods"
    );
    let with_policy = render(&["--set", "deidentifier.policyConfigMap=reviewed-policy"]);
    assert!(with_policy.contains("--policy=/etc/lienthong/policy/policy.toml"));
    assert!(with_policy.contains("name: reviewed-policy"));

    // The gateway: HPA on CPU (and in-flight events when asked), PDB, TLS mounts.
    let hpa = of_kind(&prod, "HorizontalPodAutoscaler");
    assert_eq!(hpa.len(), 1);
    let metrics = serde_yaml::to_string(&hpa[0]["spec"]["metrics"]).unwrap();
    assert!(metrics.contains("cpu") && metrics.contains("lienthong_gateway_in_flight_events"));
    assert_eq!(
        of_kind(&prod, "PodDisruptionBudget")[0]["spec"]["minAvailable"].as_u64(),
        Some(2)
    );
    assert!(
        of_kind(&defaults, "Deployment")
            .iter()
            .find(|d| name(d).ends_with("gateway"))
            .map(|d| d["spec"]["replicas"].is_null())
            .unwrap_or(false),
        "with autoscaling on, the HPA owns the gateway's replica count"
    );

    // Metrics stay inside the cluster: no Service reachable from outside carries them.
    for svc in of_kind(&prod, "Service") {
        if svc["spec"]["type"] == "LoadBalancer" || svc["spec"]["type"] == "NodePort" {
            let ports = serde_yaml::to_string(&svc["spec"]["ports"]).unwrap();
            assert!(
                !ports.contains("metrics"),
                "{} publishes metrics",
                name(svc)
            );
        }
    }
    assert!(
        of_kind(&prod, "Service")
            .iter()
            .any(|svc| name(svc).ends_with("gateway-metrics")),
        "the gateway's metrics have a Service of their own"
    );
    // The public Service keeps callers' addresses: the gateway limits connections per address.
    let public = |rendered: &[Value]| {
        of_kind(rendered, "Service")
            .into_iter()
            .find(|svc| name(svc).ends_with("gateway"))
            .map(|svc| svc["spec"].clone())
            .expect("the gateway's Service")
    };
    assert_eq!(public(&prod)["externalTrafficPolicy"], "Local");
    assert!(
        public(&manifests(&render(&[
            "--set",
            "gateway.service.type=ClusterIP"
        ])))["externalTrafficPolicy"]
            .is_null(),
        "a ClusterIP Service has no external traffic policy"
    );

    // Topics and schemas before install and upgrade.
    let job = of_kind(&prod, "Job");
    assert_eq!(job.len(), 1);
    assert_eq!(
        job[0]["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let steps = serde_yaml::to_string(&containers(job[0])).unwrap();
    assert!(steps.contains("topics") && steps.contains("apply") && steps.contains("register"));

    // Only the gateway and the query API accept traffic from outside.
    let policies = of_kind(&prod, "NetworkPolicy");
    let open: Vec<&str> = policies
        .iter()
        .filter(|p| {
            p["spec"]["ingress"]
                .as_sequence()
                .is_some_and(|rules| rules.iter().any(|r| r["from"].is_null()))
        })
        .map(|p| name(p))
        .collect();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(
        open.iter()
            .all(|n| n.ends_with("gateway") || n.ends_with("regional-store"))
    );

    // Hardened pods, secrets only by reference, SASL and registry passwords as files.
    for m in defaults.iter().chain(prod.iter()) {
        for c in containers(m) {
            assert_eq!(
                c["securityContext"]["readOnlyRootFilesystem"],
                true,
                "{}",
                name(m)
            );
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        }
        if !containers(m).is_empty() {
            assert_eq!(
                pod_spec(m)["securityContext"]["runAsNonRoot"],
                true,
                "{}",
                name(m)
            );
        }
    }
    assert!(
        of_kind(&prod, "Secret").is_empty(),
        "the chart renders no Secret"
    );
    let text = render(&["-f", &production()]);
    for expected in [
        "LIENTHONG_KAFKA_SASL_PASSWORD_FILE",
        "LIENTHONG_REGISTRY_PASSWORD_FILE",
        "LIENTHONG_PG_PASSWORD_FILE",
        "LIENTHONG_KAFKA_TLS_CA",
        "--client-ca=/etc/lienthong/client-ca/ca.crt",
        "--hub=79000=79025,79026",
        "--facility-directory=/etc/lienthong/facilities/facilities.csv",
        "name: moh-facility-directory",
    ] {
        assert!(text.contains(expected), "{expected} missing");
    }
    assert_eq!(
        text.matches("--hub=79000=79025,79026").count(),
        4,
        "hubs at the gateway and at each regional store"
    );
    assert_eq!(of_kind(&prod, "ServiceMonitor").len(), 1);
    assert!(of_kind(&defaults, "ServiceMonitor").is_empty());

    // `helm test` checks the cluster against the release: ACLs without drift, schemas as built.
    let test_pod = of_kind(&prod, "Pod");
    assert_eq!(test_pod.len(), 1);
    assert_eq!(
        test_pod[0]["metadata"]["annotations"]["helm.sh/hook"],
        "test"
    );
    let steps = serde_yaml::to_string(&containers(test_pod[0])).unwrap();
    assert!(
        steps.contains("- acls\n") && steps.contains("- list\n"),
        "{steps}"
    );
    assert!(
        steps.contains("- schemas\n") && steps.contains("- verify\n"),
        "{steps}"
    );

    // The alert rules and the dashboard ship with the chart, as their files say.
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("files/prometheus-rules.yaml")).unwrap(),
    )
    .unwrap();
    let rule = of_kind(&prod, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["spec"]["groups"], rules["groups"]);
    assert_eq!(rule[0]["metadata"]["labels"]["release"], "prometheus");
    let dashboard = of_kind(&prod, "ConfigMap")
        .into_iter()
        .find(|c| name(c).ends_with("-dashboard"))
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["lienthong.json"].as_str().unwrap()).unwrap();
    let file: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, file);
    assert!(of_kind(&defaults, "PrometheusRule").is_empty());
    assert!(of_kind(&defaults, "ConfigMap").is_empty());
}

/// Every flag and `LIENTHONG_*` variable a rendered container passes is one its binary accepts
/// (the binary's own `--help`, with subcommands for the CLI), and the production values run
/// Kafka over SASL_SSL and PostgreSQL with verified TLS: values that the binaries would refuse
/// at start-up fail here instead of crashing pods.
#[test]
fn production_containers_pass_only_what_the_binaries_accept() {
    let prod = manifests(&render(&["-f", &production()]));
    let mut checked = 0;
    let mut kafka_users = std::collections::BTreeSet::new();
    let mut registry_users = std::collections::BTreeSet::new();
    for m in &prod {
        for c in containers(m) {
            let command: Vec<String> = c["command"]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let Some(binary) = command
                .first()
                .and_then(|p| p.rsplit('/').next())
                .map(str::to_owned)
            else {
                continue;
            };
            let args: Vec<String> = command[1..]
                .iter()
                .cloned()
                .chain(
                    c["args"]
                        .as_sequence()
                        .map(|s| {
                            s.iter()
                                .filter_map(|v| v.as_str().map(str::to_owned))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                )
                .collect();
            // The CLI's help is per subcommand: the words before the first flag.
            let subcommand: Vec<&str> = args
                .iter()
                .take_while(|a| !a.starts_with('-'))
                .map(String::as_str)
                .collect();
            let out = Command::new(lienthong_tests::workspace_bin(&binary))
                .args(&subcommand)
                .arg("--help")
                .output()
                .expect("binary runs");
            let help = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{binary} {subcommand:?} --help failed"
            );
            for flag in args.iter().filter(|a| a.starts_with("--")) {
                let flag = flag.split('=').next().unwrap_or_default();
                assert!(
                    help.contains(flag),
                    "{} container {}: {binary} has no flag {flag}",
                    name(m),
                    c["name"].as_str().unwrap_or("?")
                );
            }
            for env in c["env"].as_sequence().into_iter().flatten() {
                let var = env["name"].as_str().unwrap_or_default();
                if var.starts_with("LIENTHONG_") {
                    assert!(
                        help.contains(&format!("[env: {var}")),
                        "{} container {}: {binary} {subcommand:?} reads no {var}",
                        name(m),
                        c["name"].as_str().unwrap_or("?")
                    );
                }
                // Which user each binary is, by the Secret its user name comes from.
                let users = match var {
                    "LIENTHONG_KAFKA_SASL_USERNAME" => Some(&mut kafka_users),
                    "LIENTHONG_REGISTRY_USERNAME" => Some(&mut registry_users),
                    _ => None,
                };
                if let Some(users) = users {
                    let secret = env["valueFrom"]["secretKeyRef"]["name"].as_str();
                    users.insert(format!("{binary}={}", secret.unwrap_or_default()));
                }
                if var == "LIENTHONG_KAFKA_SECURITY_PROTOCOL" {
                    assert_eq!(env["value"].as_str(), Some("sasl-ssl"), "{}", name(m));
                }
                if var == "LIENTHONG_PG_SSLMODE" {
                    assert_eq!(env["value"].as_str(), Some("verify-full"), "{}", name(m));
                }
                if var == "LIENTHONG_PG_DSN" {
                    assert!(
                        !env["value"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("sslmode=disable"),
                        "{}",
                        name(m)
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} containers checked");
    let set = |users: &[&str]| -> std::collections::BTreeSet<String> {
        users.iter().map(|u| (*u).to_owned()).collect()
    };
    // Least privilege: each kind of workload is its own Kafka principal.
    assert_eq!(
        kafka_users,
        set(&[
            "lienthong=lienthong-kafka-admin",
            "lienthong-gateway=lienthong-kafka-gateway",
            "lienthong-regional-store=lienthong-kafka-regional",
            "lienthong-warehouse-loader=lienthong-kafka-warehouse",
            "lienthong-deidentifier=lienthong-kafka-deidentifier",
        ])
    );
    // The registry: the setup job registers schemas as a writer; the services and `helm test`
    // (`lienthong schemas verify`) only read them.
    assert_eq!(
        registry_users,
        set(&[
            "lienthong=lienthong-registry-schemas",
            "lienthong=lienthong-registry-user",
            "lienthong-gateway=lienthong-registry-user",
            "lienthong-regional-store=lienthong-registry-user",
            "lienthong-warehouse-loader=lienthong-registry-user",
            "lienthong-deidentifier=lienthong-registry-user",
        ])
    );
}

/// `checksum/mounted` of each long-running workload, by workload name.
fn mounted_checksums(extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut args = vec!["-f".to_owned(), production()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    manifests(&render(&args))
        .iter()
        .filter(|m| matches!(m["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(|m| {
            let sum = m["spec"]["template"]["metadata"]["annotations"]["checksum/mounted"]
                .as_str()
                .unwrap_or_else(|| panic!("{} has no checksum/mounted annotation", name(m)));
            (name(m).to_owned(), sum.to_owned())
        })
        .collect()
}

#[test]
fn a_changed_secret_or_start_time_config_restarts_exactly_the_pods_that_mount_it() {
    let base = mounted_checksums(&[]);
    // Gateway, three regions, de-identification, warehouse loader.
    assert_eq!(base.len(), 6, "{base:?}");
    for sum in base.values() {
        assert!(
            sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()),
            "{sum}"
        );
    }
    let changed = |set: &str| -> Vec<String> {
        let now = mounted_checksums(&["--set", set]);
        base.iter()
            .filter(|(name, sum)| now.get(*name) != Some(sum))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let regions = [
        "lt-lienthong-regional-01",
        "lt-lienthong-regional-48",
        "lt-lienthong-regional-79",
    ];
    assert_eq!(
        changed("warehouseLoader.pgPasswordSecret=rotated"),
        ["lt-lienthong-warehouse-loader"]
    );
    assert_eq!(
        changed("deidentifier.policyConfigMap=reviewed-policy"),
        ["lt-lienthong-deidentifier"]
    );
    let mut readers = vec!["lt-lienthong-gateway"];
    readers.extend(regions);
    assert_eq!(changed("pseudonymKey.secret=rotated"), readers);
    // Every Kafka client mounts its SASL secret.
    assert_eq!(changed("kafka.tls.caSecret=new-ca").len(), 6);
    assert_eq!(changed("tracing.clientCertSecret=rotated").len(), 6);
    // What the services re-read by themselves restarts nothing when it changes.
    assert!(changed("gateway.tokenKeysConfigMap=other-keys").is_empty());
    assert!(changed("gateway.tlsSecret=renewed").is_empty());
    assert!(changed("gateway.clientCaSecret=other-ca").is_empty());
    assert!(changed("regionalStore.tlsSecret=renewed").is_empty());
    assert!(changed("gateway.facilityDirectoryConfigMap=directory").is_empty());
    // Operators' own annotations stay beside the checksum.
    let all = manifests(&render(&["-f", &production(), "-f", &scheduling()]));
    for m in of_kind(&all, "Deployment") {
        let annotations = &m["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["example.org/owner"], "lienthong", "{}", name(m));
        assert!(annotations["checksum/mounted"].is_string(), "{}", name(m));
    }
}

#[test]
fn the_chart_readme_lists_every_value_as_values_yaml_documents_it() {
    use lienthong_tests::chart_readme::with_fresh_table;
    let values = std::fs::read_to_string(chart().join("values.yaml")).unwrap();
    let path = chart().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let fresh = with_fresh_table(&readme, &values).unwrap();
    if std::env::var_os("LIENTHONG_WRITE_CHART_README").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    assert!(
        readme == fresh,
        "helm/lienthong/README.md is out of date with values.yaml: regenerate it with \
         LIENTHONG_WRITE_CHART_README=1 cargo test -p lienthong-tests --test helm_chart the_chart_readme"
    );
    // Every value carries a description, its own or its group's.
    let rows = lienthong_tests::chart_readme::value_rows(&values).unwrap();
    let undocumented: Vec<&str> = rows
        .iter()
        .filter(|r| {
            r.description.is_empty()
                && !rows.iter().any(|g| {
                    g.default.is_empty()
                        && !g.description.is_empty()
                        && r.key.starts_with(&format!("{}.", g.key))
                })
        })
        .map(|r| r.key.as_str())
        .collect();
    assert!(
        undocumented.is_empty(),
        "values without a description in values.yaml: {undocumented:?}"
    );
}

#[test]
fn every_workload_exports_traces_to_the_collector_the_values_name() {
    let prod = manifests(&render(&["-f", &production()]));
    let workloads: Vec<&Value> = prod
        .iter()
        .filter(|m| matches!(m["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .collect();
    assert_eq!(workloads.len(), 6);
    for m in workloads {
        let c = containers(m)[0];
        let env: std::collections::BTreeMap<&str, &str> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        assert_eq!(
            env.get("LIENTHONG_OTLP_ENDPOINT"),
            Some(&"https://otel-collector.observability:4318"),
            "{}",
            name(m)
        );
        assert_eq!(
            env.get("LIENTHONG_TRACE_SAMPLE_RATIO"),
            Some(&"0.05"),
            "{}",
            name(m)
        );
        let mounts = serde_yaml::to_string(&c["volumeMounts"]).unwrap();
        for (path, file) in [
            ("/etc/lienthong/otlp-ca", env["LIENTHONG_OTLP_CA"]),
            ("/etc/lienthong/otlp-client", env["LIENTHONG_OTLP_KEY"]),
        ] {
            assert!(
                mounts.contains(path) && file.starts_with(path),
                "{}: {path}",
                name(m)
            );
        }
        let volumes = serde_yaml::to_string(&pod_spec(m)["volumes"]).unwrap();
        assert!(
            volumes.contains("secretName: lienthong-otlp-client"),
            "{}",
            name(m)
        );
    }
    // Without an endpoint nothing is exported and nothing is mounted for it.
    let defaults = render(&["--set", "tracing.caSecret=ca"]);
    assert!(!defaults.contains("LIENTHONG_OTLP") && !defaults.contains("otlp-ca"));
    // A sample ratio outside 0..1 or an endpoint that is no URL stops the install.
    for bad in [
        "tracing.sampleRatio=1.5",
        "tracing.otlpEndpoint=collector:4318",
    ] {
        let err = helm(&[
            "template",
            "lt",
            chart().to_str().unwrap(),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            bad,
        ])
        .expect_err(bad);
        assert!(err.contains("tracing"), "{bad}: {err}");
    }
}
