//! deploy/docker/compose.yaml checked without a container engine: every reference it makes
//! resolves (services, secrets, volumes, files, the Dockerfile and the binaries it copies),
//! start order waits on health checks, the lienthong containers pass only flags and
//! `LIENTHONG_*` variables their binaries read, their settings match the servers beside them,
//! and what they write is a folder the image gives their user.

// Test code: failing loudly on a broken fixture is the point.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use lienthong_tests::{repo_root, workspace_bin};
use serde_yaml::Value;

fn docker_dir() -> PathBuf {
    repo_root().join("deploy/docker")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(docker_dir().join("compose.yaml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).expect("compose.yaml parses");
    value.apply_merge().expect("merge keys resolve");
    value
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `depends_on` as (service, condition); the short list form means "started".
fn depends_on(service: &Value) -> Vec<(String, String)> {
    let d = &service["depends_on"];
    if d.is_sequence() {
        return strings(d)
            .into_iter()
            .map(|s| (s, "service_started".into()))
            .collect();
    }
    keys(d)
        .into_iter()
        .map(|k| {
            let c = d[k.as_str()]["condition"]
                .as_str()
                .unwrap_or("service_started")
                .to_owned();
            (k, c)
        })
        .collect()
}

fn help(binary: &str, subcommand: &[&str]) -> String {
    let out = Command::new(workspace_bin(binary))
        .args(subcommand)
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{binary} {subcommand:?} --help failed"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_reference_in_the_compose_file_resolves() {
    let c = compose();
    let services = &c["services"];
    let names = keys(services);
    let secrets = keys(&c["secrets"]);
    let volumes = keys(&c["volumes"]);
    let dockerfile = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    for name in &names {
        let s = &services[name.as_str()];
        let image = s["image"].as_str().unwrap_or_default();
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "{name}: image {image:?} has no fixed tag"
        );
        for (dep, condition) in depends_on(s) {
            assert!(names.contains(&dep), "{name} depends on unknown {dep}");
            match condition.as_str() {
                "service_healthy" => assert!(
                    !services[dep.as_str()]["healthcheck"].is_null(),
                    "{name} waits for {dep} to be healthy, which has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    services[dep.as_str()]["ports"].is_null(),
                    "{name} waits for {dep} to exit, which is a server"
                ),
                other => panic!(
                    "{name} waits for {dep} only to be {other}: start order is not readiness"
                ),
            }
        }
        for secret in strings(&s["secrets"]) {
            assert!(
                secrets.contains(&secret),
                "{name} uses undeclared secret {secret}"
            );
        }
        for mount in strings(&s["volumes"]) {
            let source = mount.split(':').next().unwrap_or_default();
            if source.starts_with("./") {
                assert!(
                    docker_dir().join(source).exists(),
                    "{name} mounts {source}, which is not in deploy/docker"
                );
            } else {
                assert!(
                    volumes.contains(&source.to_owned()),
                    "{name} mounts undeclared volume {source}"
                );
            }
        }
        if let Some(build) = s["build"].as_mapping() {
            let context = docker_dir().join(build[&Value::from("context")].as_str().unwrap());
            let file = build[&Value::from("dockerfile")].as_str().unwrap();
            assert!(
                context.join(file).is_file(),
                "{name}: no {file} in the build context"
            );
        }
        // Every lienthong binary a container runs is one the image copies in.
        if let Some(binary) = strings(&s["entrypoint"]).first() {
            let binary = binary.rsplit('/').next().unwrap();
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "{name} runs {binary}, which the Dockerfile does not copy"
            );
        }
    }
    // Secrets come from files the users create under ./secrets, never from the repository.
    for secret in &secrets {
        let file = c["secrets"][secret.as_str()]["file"].as_str().unwrap();
        assert!(file.starts_with("./secrets/"), "{secret}: {file}");
        assert!(
            !docker_dir().join(file).exists(),
            "{file} is in the repository"
        );
    }
    // Start order: the setup waits for healthy servers, the services for the setup.
    let init = depends_on(&services["init"]);
    for server in ["kafka", "registry"] {
        assert!(
            init.contains(&(server.into(), "service_healthy".into())),
            "{init:?}"
        );
    }
    assert!(
        depends_on(&services["registry"]).contains(&("postgres".into(), "service_healthy".into()))
    );
}

#[test]
fn the_lienthong_containers_pass_what_their_binaries_read_and_match_the_servers() {
    let c = compose();
    let services = &c["services"];
    let dockerfile = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    let mut checked = 0;
    for name in keys(services) {
        let s = &services[name.as_str()];
        if s["image"].as_str() != Some("lienthong:dev") {
            continue;
        }
        let entry = strings(&s["entrypoint"]);
        let command = strings(&s["command"]);
        let (binary, help) = match entry.first() {
            Some(path) => {
                let binary = path.rsplit('/').next().unwrap().to_owned();
                let help = help(&binary, &[]);
                (binary, help)
            }
            // The setup container runs these `lienthong` commands through a shell.
            None => {
                let script = command.join(" ");
                assert!(
                    script.contains("lienthong topics apply")
                        && script.contains("lienthong schemas register")
                );
                let help = help("lienthong", &["topics", "apply"])
                    + &help("lienthong", &["schemas", "register"]);
                ("lienthong".into(), help)
            }
        };
        if !entry.is_empty() {
            for flag in command.iter().filter(|a| a.starts_with("--")) {
                assert!(
                    help.contains(flag.as_str()),
                    "{name}: {binary} has no flag {flag}"
                );
            }
        }
        for var in keys(&s["environment"]) {
            // The de-identification service reads the pseudonym key's path from the
            // environment only to refuse an analytics key equal to it (its config.rs).
            let refusal_check =
                binary == "lienthong-deidentifier" && var == "LIENTHONG_PSEUDONYM_KEY_FILE";
            if var.starts_with("LIENTHONG_") && !refusal_check {
                assert!(
                    help.contains(&format!("[env: {var}")),
                    "{name}: {binary} reads no {var}"
                );
            }
        }
        let env = |var: &str| {
            s["environment"][var]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        // The broker has a PLAINTEXT listener only; PostgreSQL serves no TLS.
        let listeners = services["kafka"]["environment"]["KAFKA_LISTENERS"]
            .as_str()
            .unwrap();
        if listeners.contains("PLAINTEXT://:9092") {
            assert_eq!(
                env("LIENTHONG_KAFKA_SECURITY_PROTOCOL"),
                "plaintext",
                "{name}"
            );
        }
        if !env("LIENTHONG_PG_DSN").is_empty() {
            assert_eq!(env("LIENTHONG_PG_SSLMODE"), "disable", "{name}");
        }
        // What a service writes is a mounted volume on a folder the image makes for its user.
        if let Some(i) = command.iter().position(|a| a == "--data-dir") {
            let dir = &command[i + 1];
            assert!(
                strings(&s["volumes"])
                    .iter()
                    .any(|m| m.ends_with(&format!(":{dir}"))),
                "{name} writes {dir}, which is no volume"
            );
            assert!(
                dockerfile.contains(&format!("-o 10001 -g 10001 /var/lib/lienthong {dir}"))
                    || dockerfile.contains(&format!("-o 10001 -g 10001 {dir}")),
                "{name}: the image does not create {dir} for uid 10001"
            );
        }
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "init, gateway, regional store, de-identification, loader"
    );
    // The registry's database exists: created by an init script the postgres service mounts.
    let url = services["registry"]["environment"]["APICURIO_DATASOURCE_URL"]
        .as_str()
        .unwrap();
    let database = url.rsplit('/').next().unwrap();
    let created = std::fs::read_dir(docker_dir().join("postgres-init"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .any(|sql| sql.contains(&format!("CREATE DATABASE {database}")));
    assert!(
        created || services["postgres"]["environment"]["POSTGRES_DB"].as_str() == Some(database),
        "nothing creates the registry's database {database}"
    );
}
