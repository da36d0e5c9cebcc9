//! `bench`: the load generator.

use std::io::{Read, Write};
use std::time::Duration;

use predicates::prelude::*;
use udsecho_harness::Server;

use crate::{client, fake_server, one_line};

#[test]
fn bench_reports_sane_json_against_our_server() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for mode in ["raw", "framed"] {
        for pipeline in ["1", "8"] {
            let out = client(server.socket())
                .args([
                    "bench",
                    "--connections",
                    "4",
                    "--duration",
                    "300ms",
                    "--size",
                    "1KiB",
                ])
                .args(["--mode", mode, "--pipeline", pipeline, "--json"])
                .assert()
                .success()
                .get_output()
                .stdout
                .clone();
            let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(report["mode"], mode);
            assert_eq!(report["connections"], 4);
            assert_eq!(report["size"], 1024);
            let trips = report["round_trips"].as_u64().unwrap();
            assert!(trips > 0, "{report}");
            let rate = report["round_trips_per_sec"].as_f64().unwrap();
            let secs = report["seconds"].as_f64().unwrap();
            assert!((rate * secs - trips as f64).abs() < 1.0, "{report}");
            let l = &report["latency_us"];
            assert!(l["p50"].as_f64().unwrap() > 0.0);
            assert!(
                l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["p999"].as_f64(),
                "{report}"
            );
        }
    }
}

#[test]
fn bench_text_report_counts_connections_in_words() {
    let server = Server::start(Vec::<String>::new()).unwrap();
    for (connections, words) in [("1", "1 connection,"), ("3", "3 connections,")] {
        client(server.socket())
            .args(["bench", "-c", connections, "-d", "100ms"])
            .assert()
            .success()
            .stdout(predicate::str::starts_with(format!("raw mode, {words}")));
    }
}

#[test]
fn bench_fails_when_echoes_are_corrupted() {
    let (_dir, path) = fake_server(|mut stream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0
                || stream
                    .write_all(&buf[..n].iter().map(|b| !b).collect::<Vec<_>>())
                    .is_err()
            {
                break;
            }
        }
    });
    client(&path)
        .args(["bench", "--duration", "300ms", "--json"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("mismatch"));
}

#[test]
fn framed_bench_gives_up_on_a_server_that_never_answers_hello() {
    let (_dir, path) = crate::mute_server();
    let out = client(&path)
        .args(["--timeout", "1s", "bench", "--mode", "framed", "-d", "5s"])
        .timeout(Duration::from_secs(2))
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: timed out after 1s waiting for the server's Hello",
            path.display()
        )
    );
}

#[test]
fn raw_bench_against_a_framed_only_server_says_to_add_framed() {
    let server = Server::start(["--mode", "framed"]).unwrap();
    let out = client(server.socket())
        .args(["bench", "-d", "1s"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert_eq!(
        one_line(&out.stderr),
        format!(
            "udsecho-client: {}: the server speaks framed mode only; add --framed",
            server.socket().display()
        )
    );
}
