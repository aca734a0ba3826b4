//! What an operator watches: Prometheus series with help and type from the
//! start, health and readiness endpoints, and the dashboard and alert rules
//! in deploy/ checked against the series turnout exports.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// `GET path` from turnout's metrics listener: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The series names a scrape holds (histograms with their suffixes).
fn names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The `turnout_*` names an expression uses.
fn used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("turnout_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

#[test]
fn every_series_has_help_and_type_from_the_start_and_readyz_follows_the_backends() {
    let port = turnout_harness::free_port().unwrap();
    let mut s = Setup::start(Options {
        phase: Some("mirror"),
        admin: true,
        metrics: Some(port),
        // (Naming min_compared_reads keeps the harness from setting it: the
        // default holds.)
        sampling: "rate = 0.5\n# guards.min_compared_reads: the default",
        ..Options::default()
    });
    let (status, body) = get(port, "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    eventually("ready: both backends reachable", || {
        get(port, "/readyz").0.contains("200")
    });
    // Every series, before anything happened: help, type, a sample.
    let (_, scrape) = get(port, "/metrics");
    println!("{scrape}");
    let present = names(&scrape);
    for (name, kind, _) in turnout_proxy::metrics::SERIES {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            scrape.contains(&format!("# TYPE {name} {kind}")),
            "no TYPE {kind} for {name}"
        );
        let sample = if *kind == "histogram" {
            format!("{name}_bucket")
        } else {
            name.to_string()
        };
        assert!(present.contains(&sample), "no {sample} sample from start");
    }
    for line in scrape.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            turnout_proxy::metrics::SERIES
                .iter()
                .any(|(n, _, _)| *n == name),
            "{name} is exported but not described in SERIES"
        );
    }
    assert!(
        scrape.contains("turnout_build_info{") && scrape.contains("protocol=\"postgres\""),
        "{scrape}"
    );
    assert!(
        scrape.contains("turnout_guard_min_compared_reads 100"),
        "{scrape}"
    );
    assert!(scrape.contains("turnout_next_flip_refusals 1"), "{scrape}");

    // The dashboard's and the alert rules' queries use series turnout exports.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/turnout.json")).unwrap())
            .unwrap();
    let mut exprs: Vec<String> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for a in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push(a["expr"].as_str().unwrap().to_string());
    }
    let rules = std::fs::read_to_string(deploy("prometheus/turnout-rules.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(|e| e.trim().to_string()),
    );
    assert!(exprs.len() > 20, "{exprs:?}");
    for e in &exprs {
        let names = used(e);
        for n in names {
            assert!(
                present.contains(&n),
                "{n} (in {e:?}) is not a series turnout exports"
            );
        }
    }
    // Prometheus's own checker takes the rules.
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/turnout-rules.yml"))
        .output()
        .expect(
            "promtool is needed for this test (apt-get install prometheus; .ci/run installs it)",
        );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The alerts' own unit tests (the backend alert follows the phase).
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(deploy("prometheus/turnout-rules.test.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A backend down: not ready, and the series says which.
    s.new.as_mut().unwrap().stop().unwrap();
    eventually("not ready once new is down", || {
        let (status, body) = get(port, "/readyz");
        status.contains("503") && body.contains("new")
    });
    let (_, scrape) = get(port, "/metrics");
    assert!(
        scrape.contains("turnout_backend_up{side=\"new\"} 0"),
        "{scrape}"
    );
    assert!(
        scrape.contains("turnout_backend_up{side=\"old\"} 1"),
        "{scrape}"
    );
    assert!(get(port, "/healthz").0.contains("200"), "healthz stays up");
}

/// No Docker engine runs in CI, so the image and compose files are checked
/// for what a build needs: every workspace member's manifest in the cached
/// dependency layer, the ports and health check the demo config uses, and
/// every file compose mounts.
#[test]
fn the_image_and_compose_files_agree_with_the_workspace_and_the_demo_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .unwrap()
        .to_string();
    for member in members.split('"').skip(1).step_by(2) {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "the dependency layer lacks {member}'s manifest"
        );
    }
    let config = turnout_config::load(&deploy("demo/turnout.toml")).unwrap();
    let metrics_port = config
        .metrics
        .address
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let listen_port = config
        .listen
        .address
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        dockerfile.contains(&format!("EXPOSE {listen_port} {metrics_port}")),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains(&format!("/dev/tcp/127.0.0.1/{metrics_port}"))
            && dockerfile.contains("GET /healthz"),
        "HEALTHCHECK on /healthz"
    );
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_DEBUG=0"));
    assert!(dockerfile.contains("chown turnout:turnout /var/lib/turnout /run/turnout"));
    let compose = std::fs::read_to_string(deploy("compose.yaml")).unwrap();
    for mount in compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|l| l.split(':').next().unwrap())
    {
        assert!(
            deploy(mount).exists(),
            "compose mounts {mount}, which is missing"
        );
    }
    assert!(compose.contains(&format!("\"{listen_port}:{listen_port}\"")));
    assert!(compose.contains(&format!("\"{metrics_port}:{metrics_port}\"")));
}

/// The Kubernetes manifests and the systemd unit, checked without a
/// cluster: every manifest parses (Python's YAML), the kinds one instance
/// needs are there, the probes use the metrics port the config serves
/// `/readyz` on, the config in the ConfigMap passes `turnout check-config`
/// with the Secret's variables, and the unit runs commands turnout takes.
#[test]
fn the_kubernetes_manifests_and_the_systemd_unit_agree_with_turnout() {
    let manifests = deploy("kubernetes/turnout.yaml");
    let script = r#"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print(json.dumps(docs))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&manifests)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in the manifests"))
    };
    for d in &docs {
        assert!(
            d["apiVersion"].is_string() && d["metadata"]["name"].is_string(),
            "{d}"
        );
    }
    let deployment = kind("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(
        kind("Service")["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let metrics_port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == container["readinessProbe"]["httpGet"]["port"])
        .expect("the probe's port is a named container port")["containerPort"]
        .as_u64()
        .unwrap();
    // The config as mounted, with the Secret's variables.
    let config_text = kind("ConfigMap")["data"]["turnout.toml"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(config_text.contains(&format!("address = \"0.0.0.0:{metrics_port}\"")));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["run", "--config"]);
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(args[2], format!("{mount}/turnout.toml"));
    let dir = turnout_harness::TempDir::new("turnout-k8s").unwrap();
    let path = dir.path().join("turnout.toml");
    std::fs::write(&path, &config_text).unwrap();
    let mut check = Command::new(turnout_bin());
    check.args(["check-config", "--config"]).arg(&path);
    for (k, v) in kind("Secret")["stringData"].as_object().unwrap() {
        check.env(k, v.as_str().unwrap());
    }
    let out = check.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the Secret, the missing variable is named.
    let out = Command::new(turnout_bin())
        .args(["check-config"])
        .arg(&path)
        .env_remove("OLD_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OLD_PASSWORD is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The systemd unit runs commands turnout takes.
    let unit = std::fs::read_to_string(deploy("systemd/turnout.service")).unwrap();
    for (key, line) in [
        (
            "ExecStart=",
            "/usr/local/bin/turnout run --config /etc/turnout/turnout.toml",
        ),
        (
            "ExecStartPre=",
            "/usr/local/bin/turnout check-config --config /etc/turnout/turnout.toml",
        ),
    ] {
        assert!(unit.contains(&format!("{key}{line}")), "{key} in {unit}");
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        let out = Command::new(turnout_bin())
            .args(&words[..1])
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "turnout {} --help", words[0]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section}");
    }
}

/// `log.format = "json"`: every line turnout logs is one JSON object with
/// its time, level, message and fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut s = Setup::start(Options {
        admin: true,
        ..Options::default()
    });
    let text = std::fs::read_to_string(&s.proxy.config).unwrap();
    assert!(text.contains("[log]\n"));
    std::fs::write(
        &s.proxy.config,
        text.replacen("[log]\n", "[log]\nformat = \"json\"\n", 1),
    )
    .unwrap();
    s.restart_proxy("turnout-json.log");
    s.run_ok(&["SELECT 1"]);
    let log = std::fs::read_to_string(s.dir.path().join("turnout-json.log")).unwrap();
    let mut listening = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["at"].is_string() && v["level"].is_string(), "{line}");
        if v["message"] == "turnout listening" {
            listening = true;
            assert!(v["addr"].is_string(), "{line}");
        }
    }
    assert!(listening, "{log}");
}
